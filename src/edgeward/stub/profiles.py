"""User profiles behind ``user.profile.get`` / ``user.profile.update``.

The gateway's tests rely on ``PATCH /api/v1/user/profile`` as a dependable source of a backend
4xx answer, so every way an update can be wrong yields the same code, ``invalid_profile_update``,
with a message naming the offending field.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from typing import Any

from edgeward.clock import now_ms
from edgeward.stub.errors import ApiError

__all__ = ("Profile", "ProfileStore", "parse_profile_update")

_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")
_DEFAULT_LOCALE = "en"


@dataclasses.dataclass(slots=True)
class Profile:
    user_id: str
    email: str | None  # None for a user id the stub never saw log in
    display_name: str
    locale: str
    updated_at_ms: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_profile_update", message)


def parse_profile_update(body: Any) -> dict[str, str]:
    """The validated changes of a decoded PATCH body; nothing is applied unless all are valid."""
    if not isinstance(body, dict):
        raise _invalid("body must be a JSON object")
    unknown = sorted(set(body) - {"display_name", "locale"})
    if unknown:
        raise _invalid(f"unknown field {unknown[0]!r}: only display_name and locale can change")
    if "display_name" in body:
        name = body["display_name"]
        if not isinstance(name, str):
            raise _invalid("display_name must be a string")
        if not 1 <= len(name) <= 64 or not name.strip():
            raise _invalid("display_name must be 1..64 characters, not all blank")
    if "locale" in body:
        locale = body["locale"]
        if not isinstance(locale, str):
            raise _invalid("locale must be a string")
        if not 2 <= len(locale) <= 16 or _LOCALE.fullmatch(locale) is None:
            raise _invalid("locale must be a language tag of 2..16 characters, such as en-GB")
    return dict(body)


class ProfileStore:
    """Profiles made on first access, any user id included, hence capped (oldest forgotten)."""

    def __init__(self, max_profiles: int) -> None:
        self._max = max_profiles
        self._profiles: OrderedDict[str, Profile] = OrderedDict()

    def get(self, user_id: str, email: str | None) -> Profile:
        profile = self._profiles.get(user_id)
        if profile is None:
            default_name = email.partition("@")[0][:64] if email else user_id[:64]
            profile = Profile(user_id, email, default_name, _DEFAULT_LOCALE, now_ms())
            self._profiles[user_id] = profile
            while len(self._profiles) > self._max:
                self._profiles.popitem(last=False)
        return profile

    def update(self, user_id: str, email: str | None, changes: dict[str, str]) -> Profile:
        profile = self.get(user_id, email)
        if changes:
            profile.display_name = changes.get("display_name", profile.display_name)
            profile.locale = changes.get("locale", profile.locale)
            profile.updated_at_ms = now_ms()
        return profile
