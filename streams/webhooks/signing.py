"""Standard Webhooks signing: the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers.

The signed content is `{id}.{timestamp}.{body}`; the signature `v1,` + base64(HMAC-SHA256(key, content)).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping

from streams.errors import ConfigError

__all__ = ["MIN_KEY_BYTES", "SignatureError", "Signer", "verify", "webhook_id"]

MIN_KEY_BYTES = 24  # the spec's floor for symmetric secrets (192 bits)
PREFIX = "whsec_"
_NAMESPACE = uuid.UUID("6f1c2b7e-5a43-4c1e-9a51-0d7c3e9b8a21")


class SignatureError(ValueError):
    """A delivery whose Standard Webhooks headers do not verify (missing, stale, or a wrong signature)."""


def _key(secret: str, name: str) -> bytes:
    """The HMAC key of a secret: `whsec_<base64>` decoded (the spec's form, what its libraries take), else the
    text's UTF-8 bytes. ConfigError naming the secret (never showing it) when it is too short or malformed."""
    if secret.startswith(PREFIX):
        try:
            key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"webhook secret '{name}' starts with '{PREFIX}' but the rest is not base64") from None
    else:
        key = secret.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"webhook secret '{name}' is {len(key)} bytes; Standard Webhooks asks for at least "
            f"{MIN_KEY_BYTES} random bytes (e.g. '{PREFIX}' + base64 of 32 random bytes)"
        )
    return key


class Signer:
    """Signs deliveries with one endpoint's secret; holds only the key, and never shows it."""

    __slots__ = ("_key", "name")

    def __init__(self, secret: str, name: str = "secret") -> None:
        self.name = name
        self._key = _key(secret, name)

    def __repr__(self) -> str:
        return f"Signer({self.name!r})"

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        content = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
        return "v1," + base64.b64encode(hmac.new(self._key, content, hashlib.sha256).digest()).decode()

    def headers(self, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The three Standard Webhooks headers for one attempt (the timestamp is the attempt's)."""
        stamp = int(time.time()) if timestamp is None else timestamp
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": self.signature(msg_id, stamp, body),
        }


def webhook_id(route: str, event_id: str) -> str:
    """The delivery's `webhook-id`: `msg_` and a UUID derived from the route and the event id (ce_id). The same
    for every attempt and every redelivery, so receivers dedupe on it; two routes to one URL differ; never a '.'
    (the signed content's delimiter), whatever the event id holds."""
    return "msg_" + uuid.uuid5(_NAMESPACE, route + "\n" + event_id).hex


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = 300.0, now: float | None = None
) -> str:
    """Check one received delivery as a receiver would; the webhook-id, or SignatureError saying why not.

    `headers` are looked up in lower case. One matching `v1,` entry (the header may list several, space
    separated, during a secret rotation) is enough; the timestamp must be within `tolerance_s` of now.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lowered.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not msg_id or not stamp or not signatures:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError(f"webhook-timestamp {stamp!r} is not an integer") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise SignatureError(f"webhook-timestamp {timestamp} is more than {tolerance_s:g}s away from now")
    expected = Signer(secret, "receiver").signature(msg_id, timestamp, body)
    for candidate in signatures.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate, expected):
            return msg_id
    raise SignatureError("no v1 signature matches")
