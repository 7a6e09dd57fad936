"""Oracle of the public auth body checks: only ``PublicError`` (400 invalid_request) may come out.

Input: one byte choosing the route in ``PUBLIC_ROUTES``, then the request body. A body that
passes must be classified under its route, and a send-email-code body under a per-e-mail key
that the same address in other letter case also gets: the limit must not be dodged by case.
The key need not be an address itself (``r.+x@r.g`` counts under ``r.@r.g``, which is refused
as an address): it is a mailbox's name for the limits, nothing is sent to it.
"""

from __future__ import annotations

import orjson

from edgeward.public.checks import PUBLIC_ROUTES, PublicError, check_body, normalize_email

CLIENT_IP = "192.0.2.1"


def check(data: bytes) -> None:
    """Raise AssertionError on a broken invariant; let any exception but ``PublicError`` out."""
    if not data:
        return
    route = PUBLIC_ROUTES[data[0] % len(PUBLIC_ROUTES)]
    try:
        request = check_body(route, data[1:], CLIENT_IP)
    except PublicError as exc:
        assert (exc.status, exc.code) == (400, "invalid_request"), exc
        return
    assert (request.route, request.client_ip) == (route.name, CLIENT_IP), request
    if request.email is not None:
        email = orjson.loads(data[1:])["email"]
        assert normalize_email(email.upper()) == normalize_email(email.lower()) == request.email, request
