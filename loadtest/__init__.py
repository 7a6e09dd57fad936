"""Locust load tests of a gateway: ``python -m loadtest`` (``make loadtest``); see loadtest/README.md.

Two halves that never meet in one process: the runner (``run``, ``stack``, ``budgets``) starts a
stack, runs Locust as a subprocess and checks the budgets, and never imports Locust; the Locust side
(``locustfile``, ``device_user``, ``shapes``) runs on gevent, inside that subprocess only.
"""
