"""The console's settings (prefix STREAMS_CONSOLE_): users with password hashes, the session key, cookies.

Read like streams.settings: one frozen object from the environment, secrets as SecretStr, never shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigError

Role = Literal["viewer", "operator", "auditor"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "auditor")


class User(BaseModel, frozen=True):
    """One console user: a role and a bcrypt hash (`streams console --hash-password`)."""

    name: str
    role: Role
    password_hash: SecretStr


class ConsoleSettings(BaseSettings):
    """Who may log in and how sessions are kept."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_CONSOLE_", frozen=True, extra="ignore")

    users: SecretStr | None = Field(
        default=None,
        description='Users as JSON: {"alice": {"role": "auditor", "password_hash": "$2b$12$..."}}. Never shown.',
    )
    session_secret: SecretStr | None = Field(
        default=None, description="Key that signs session cookies (32+ characters). Never shown."
    )
    secure_cookies: bool = Field(
        default=True, description="Session cookie only over HTTPS (browsers treat http://localhost as secure)."
    )
    session_max_age_s: int = Field(default=8 * 3600, gt=0, description="How long a login lasts.")
    worker_urls: str = Field(
        default="", description="Comma-separated base URLs of workers' web ports, for health and metrics."
    )
    bridge_urls: str = Field(
        default="",
        description="Comma-separated base URLs of bridges' metrics ports (`streams bridge --metrics-port`), scraped"
        " for health, paused partitions and push retries.",
    )
    relay_urls: str = Field(
        default="",
        description="Comma-separated base URLs of outbox relays' metrics ports"
        " (`streams outbox relay --metrics-port`).",
    )
    evidence_sign_key: Path | None = Field(
        default=None, description="Ed25519 private key (PEM) that signs bundles built in the console; never shown."
    )
    evidence_dir: Path | None = Field(default=None, description="Where built bundles go (default <data dir>/console).")
    bench_rows: int = Field(default=1000, gt=0, le=5000, description="The most records one message page shows.")

    def user_map(self) -> dict[str, User]:
        """The users by name; ConfigError (quoting no hash) when STREAMS_CONSOLE_USERS is malformed."""
        if self.users is None:
            return {}
        try:
            parsed = json.loads(self.users.get_secret_value())
            users = {
                name: User(name=name, role=entry["role"], password_hash=SecretStr(entry["password_hash"]))
                for name, entry in parsed.items()
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ConfigError(
                'STREAMS_CONSOLE_USERS must be a JSON object like {"alice": {"role": "auditor", "password_hash":'
                ' "$2b$12$..."}} with role one of ' + ", ".join(ROLES)
            ) from None
        return users

    def secret_key(self) -> str:
        """The session signing key; ConfigError when unset or short (a guessable key forges any role)."""
        secret = self.session_secret.get_secret_value() if self.session_secret is not None else ""
        if len(secret) < 32:
            raise ConfigError(
                "STREAMS_CONSOLE_SESSION_SECRET must be set to 32 or more random characters, e.g."
                " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return secret

    def workers(self) -> list[str]:
        return _urls(self.worker_urls)

    def bridges(self) -> list[str]:
        return _urls(self.bridge_urls)

    def relays(self) -> list[str]:
        return _urls(self.relay_urls)


def _urls(text: str) -> list[str]:
    """Base URLs from a comma-separated list; a trailing /metrics is dropped (the console appends what it reads)."""
    urls = [url.strip().rstrip("/") for url in text.split(",") if url.strip()]
    return [url.removesuffix("/metrics") for url in urls]
