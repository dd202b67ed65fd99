"""Standard Webhooks signing: our headers verify with the spec's reference library, and ours rejects forgeries."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from streams.errors import ConfigError
from streams.webhooks.signing import MIN_KEY_BYTES, SignatureError, Signer, verify, webhook_id

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
BODY = b'{"invoice_id":"i-1","total":"115.00"}'


def test_signature_is_v1_hmac_sha256_of_id_timestamp_body_with_the_decoded_key() -> None:
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    headers = Signer(SECRET).headers("msg_1", BODY, timestamp=1_700_000_000)
    expected = hmac.new(bytes(range(32)), b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    assert headers == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1," + base64.b64encode(expected).decode(),
    }


def test_the_reference_library_verifies_our_headers_and_signs_what_we_verify() -> None:
    headers = Signer(SECRET).headers("msg_abc", BODY)
    assert Webhook(SECRET).verify(BODY, headers) == {"invoice_id": "i-1", "total": "115.00"}
    now = datetime.now(UTC)
    theirs = Webhook(SECRET).sign("msg_xyz", now, BODY.decode())
    assert (
        verify(
            SECRET,
            {"webhook-id": "msg_xyz", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": theirs},
            BODY,
        )
        == "msg_xyz"
    )


def test_a_tampered_body_a_wrong_secret_or_a_stale_timestamp_do_not_verify() -> None:
    headers = Signer(SECRET).headers("msg_1", BODY)
    with pytest.raises(SignatureError, match="no v1 signature"):
        verify(SECRET, headers, BODY.replace(b"115", b"116"))
    with pytest.raises(SignatureError, match="no v1 signature"):
        verify("whsec_" + base64.b64encode(bytes(32)).decode(), headers, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace(b"115", b"116"), headers)
    old = Signer(SECRET).headers("msg_1", BODY, timestamp=int(time.time()) - 600)
    with pytest.raises(SignatureError, match="away from now"):
        verify(SECRET, old, BODY)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, {"webhook-id": "msg_1"}, BODY)


def test_one_matching_signature_among_several_is_enough_during_a_rotation() -> None:
    headers = Signer(SECRET).headers("msg_1", BODY)
    other = Signer("x" * MIN_KEY_BYTES).headers("msg_1", BODY, int(headers["webhook-timestamp"]))
    rotated = {**headers, "webhook-signature": f"{other['webhook-signature']} {headers['webhook-signature']}"}
    assert verify(SECRET, rotated, BODY) == "msg_1"


def test_short_or_malformed_secrets_are_refused_without_showing_them() -> None:
    with pytest.raises(ConfigError, match="secret 'partner' is 6 bytes") as short:
        Signer("s3cret", "partner")
    assert "s3cret" not in str(short.value)
    with pytest.raises(ConfigError, match="not base64"):
        Signer("whsec_!!!not-base64!!!", "partner")
    signer = Signer(SECRET, "partner")
    assert SECRET not in repr(signer)
    assert SECRET[6:] not in repr(signer)


def test_webhook_id_is_stable_per_route_and_event_and_never_has_a_dot() -> None:
    first = webhook_id("hook", "t.invoice/0/12")
    assert first == webhook_id("hook", "t.invoice/0/12")
    assert first != webhook_id("other-hook", "t.invoice/0/12")
    assert first.startswith("msg_")
    assert "." not in first
