"""Where a load test sends its traffic, as the ``EDGEWARD_LOADTEST_*`` variables name it.

The runner reads them to decide whether to start its own stack and passes them on to Locust,
whose users read them back: one place for the names, shared by both halves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from edgeward.native.crypto import decode_public_key

__all__ = ("Target", "TargetError")

_PREFIX = "EDGEWARD_LOADTEST_"
_FIELDS = {
    "grpc_target": "GRPC_TARGET",
    "public_url": "PUBLIC_URL",
    "stub_url": "STUB_URL",
    "gateway_public_key": "GATEWAY_PUBLIC_KEY",
}


class TargetError(ValueError):
    """The variables name an incomplete or unusable target."""


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A gateway (gRPC and public auth), the stub-compatible helper URL and the gateway's key.

    ``stub_url`` serves the two development routes a load test needs besides the gateway: the
    mailbox holding a login code and the event push (docs/stub-backend.md). ``gateway_public_key``
    is the key as standard base64, or a file holding it, as ``edgeward call`` accepts it.
    """

    grpc_target: str
    public_url: str
    stub_url: str
    gateway_public_key: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Target | None:
        """The target the variables name; None when none is set (the runner then starts a stack)."""
        values = {field: environ.get(_PREFIX + name, "") for field, name in _FIELDS.items()}
        if not any(values.values()):
            return None
        missing = [_PREFIX + _FIELDS[field] for field, value in values.items() if not value]
        if missing:
            raise TargetError(f"set all four target variables or none: missing {', '.join(missing)}")
        return cls(**values)

    def env(self) -> dict[str, str]:
        """The variables that name this target, for a child process."""
        return {_PREFIX + name: getattr(self, field) for field, name in _FIELDS.items()}

    def public_key(self) -> bytes:
        """The raw 32-byte key every answer and event must verify with; TargetError if unusable."""
        path = Path(self.gateway_public_key)
        try:
            text = path.read_text().strip() if path.is_file() else self.gateway_public_key
            return decode_public_key(text)
        except (OSError, ValueError) as exc:
            raise TargetError(f"{_PREFIX}GATEWAY_PUBLIC_KEY: {exc}") from exc
