"""Limits that keep abusive clients from costing the gateway or the backend (docs/edge-protection.md).

Limiter back-ends (in-process and Redis), the command budgets, the pre-auth guard and the
resolution of a client's address. The gateway assembles them (``edgeward.gateway.edge_protection``).
"""
