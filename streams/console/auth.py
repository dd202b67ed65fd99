"""Who may do what in the console: password checks (bcrypt), roles and permissions, CSRF tokens.

Every role check happens on the server; templates only hide what a role cannot do.
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING

import bcrypt

if TYPE_CHECKING:
    from streams.console.settings import Role, User

# action -> the roles allowed to do it; reading pages is every role's.
PERMISSIONS: dict[str, frozenset[Role]] = {
    "redrive": frozenset({"operator"}),
    "replay": frozenset({"operator"}),
    "unmasked_pii": frozenset({"auditor"}),
    "evidence": frozenset({"auditor"}),
    "audit_verify": frozenset({"auditor"}),
}
# Checked against when a name is unknown, so a wrong user name costs the same time as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=12))


def hash_password(password: str, *, rounds: int = 12) -> str:
    """A bcrypt hash for STREAMS_CONSOLE_USERS; ConfigError for a password bcrypt cannot hash whole."""
    from streams.errors import ConfigError  # noqa: PLC0415

    if not password or len(password.encode()) > 72:  # bcrypt reads at most 72 bytes; more would be cut silently
        raise ConfigError("a console password must be 1 to 72 bytes (bcrypt's limit)")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def authenticate(users: dict[str, User], name: str, password: str) -> User | None:
    """The user when `password` matches its hash, else None (the same work either way)."""
    user = users.get(name)
    stored = user.password_hash.get_secret_value().encode() if user is not None else _DUMMY_HASH
    try:
        matches = bcrypt.checkpw(password.encode(), stored)
    except ValueError:  # a malformed hash in the settings: nobody logs in with it
        matches = False
    return user if matches and user is not None else None


def allowed(role: str | None, action: str) -> bool:
    return role is not None and role in PERMISSIONS[action]


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
