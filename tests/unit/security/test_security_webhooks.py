"""Tests for bastion.security.webhooks: Standard Webhooks signing and verification.

The published vector is the one every reference library of
standard-webhooks/standard-webhooks tests (``test_sign_function``): secret
``whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw``, id ``msg_p5jXN8AQM9LWM0D4loKWxJek``,
timestamp 1614265330, body ``{"test": 2432232314}``. The reference Python
package (``standardwebhooks``) verifies what we sign and signs what we verify.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bastion.security.webhooks import (
    InvalidWebhook,
    new_webhook_secret,
    parse_webhook_secret,
    sign,
    signature_headers,
    verify,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_published_vector() -> None:
    """The spec's example signature, byte for byte, and it verifies at its own time."""
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == EXPECTED
    headers = signature_headers(SECRET, MSG_ID, TIMESTAMP, BODY)
    assert headers == {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP), "webhook-signature": EXPECTED}
    verify(SECRET, headers, BODY, now=TIMESTAMP)


def test_the_reference_package_agrees_both_ways() -> None:
    """An independent verifier accepts our signature of a fresh delivery, and ours
    accepts the reference package's signature."""
    secret = new_webhook_secret()
    now = int(time.time())
    body = b'{"rule": "spraying", "severity": "high", "count": 20}'
    headers = signature_headers(secret, "dlv_1", now, body)
    assert Webhook(secret).verify(body, headers) == {"rule": "spraying", "severity": "high", "count": 20}
    theirs = Webhook(secret).sign("dlv_2", datetime.fromtimestamp(now, tz=UTC), body.decode())
    verify(secret, {"Webhook-Id": "dlv_2", "Webhook-Timestamp": str(now), "Webhook-Signature": theirs}, body, now=now)
    # and the reference refuses what we refuse: another body.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_new_secrets_are_random_and_valid() -> None:
    a, b = new_webhook_secret(), new_webhook_secret()
    assert a != b
    assert a.startswith("whsec_")
    assert len(parse_webhook_secret(a)) == 32


def _headers(**overrides: str) -> dict[str, str]:
    return {**signature_headers(SECRET, MSG_ID, TIMESTAMP, BODY), **overrides}


@pytest.mark.parametrize(
    ("headers", "body", "now"),
    [
        (_headers(), BODY + b"x", TIMESTAMP),  # tampered body
        (_headers(**{"webhook-id": "msg_other"}), BODY, TIMESTAMP),  # id swapped
        (_headers(**{"webhook-timestamp": str(TIMESTAMP + 1)}), BODY, TIMESTAMP),  # timestamp moved
        (_headers(), BODY, TIMESTAMP + 301),  # replayed after the tolerance
        (_headers(), BODY, TIMESTAMP - 301),  # from the future
        (_headers(**{"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}), BODY, TIMESTAMP),
        (_headers(**{"webhook-signature": "v1a," + EXPECTED[3:]}), BODY, TIMESTAMP),  # wrong scheme
        (_headers(**{"webhook-signature": EXPECTED[3:]}), BODY, TIMESTAMP),  # no version
        (_headers(**{"webhook-signature": ""}), BODY, TIMESTAMP),
        (_headers(**{"webhook-signature": "v1,!!!"}), BODY, TIMESTAMP),
        (_headers(**{"webhook-signature": " ".join(["v1,AAAA"] * 10 + [EXPECTED])}), BODY, TIMESTAMP),  # too many
        (_headers(**{"webhook-timestamp": "1614265330.0"}), BODY, TIMESTAMP),
        (_headers(**{"webhook-timestamp": "1e9"}), BODY, TIMESTAMP),
        (_headers(**{"webhook-timestamp": "-1"}), BODY, TIMESTAMP),
        (_headers(**{"webhook-id": ""}), BODY, TIMESTAMP),
        (_headers(**{"webhook-id": "has space"}), BODY, TIMESTAMP),
        ({"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP)}, BODY, TIMESTAMP),  # no signature
        ({"webhook-signature": EXPECTED, "webhook-timestamp": str(TIMESTAMP)}, BODY, TIMESTAMP),  # no id
        ({"webhook-id": MSG_ID, "webhook-signature": EXPECTED}, BODY, TIMESTAMP),  # no timestamp
    ],
)
def test_forged_replayed_and_malformed_deliveries_are_refused(headers: dict[str, str], body: bytes, now: int) -> None:
    """V16.4.3, V11.2.4 (attack side): each forgery, replay outside the tolerance or
    malformed header raises the one InvalidWebhook."""
    with pytest.raises(InvalidWebhook):
        verify(SECRET, headers, body, now=now)


def test_a_signature_under_another_secret_is_refused() -> None:
    other = new_webhook_secret()
    with pytest.raises(InvalidWebhook):
        verify(other, _headers(), BODY, now=TIMESTAMP)


def test_rotation_several_signatures_and_several_secrets() -> None:
    """The signature header is a space-delimited list: any valid v1 entry passes,
    unknown versions are skipped, and a verifier may hold the old and new secret."""
    new = new_webhook_secret()
    both = " ".join(["v1a,AAAA", sign(new, MSG_ID, TIMESTAMP, BODY), EXPECTED])
    verify(SECRET, _headers(**{"webhook-signature": both}), BODY, now=TIMESTAMP)
    verify(new, _headers(**{"webhook-signature": both}), BODY, now=TIMESTAMP)
    verify([new, SECRET], _headers(), BODY, now=TIMESTAMP)
    verify(SECRET, _headers(), BODY, now=TIMESTAMP + 300)  # at the edge of the tolerance
    verify(SECRET, _headers(), BODY, now=TIMESTAMP + 1000, tolerance=1000)


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # below 24 bytes
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # above 64 bytes
        "whsec_not base64!",
        "whsec_" + base64.urlsafe_b64encode(b"\xff" * 32).decode(),  # base64url, not base64
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as caught:
        parse_webhook_secret(secret)
    if len(secret) > len("whsec_"):
        assert secret[len("whsec_") :] not in str(caught.value)
    with pytest.raises(ValueError, match="webhook secret"):
        sign(secret, MSG_ID, TIMESTAMP, BODY)


def test_unpadded_secrets_are_accepted_like_the_reference() -> None:
    padded = "whsec_" + base64.b64encode(b"k" * 25).decode()
    assert padded.endswith("=")
    assert parse_webhook_secret(padded) == parse_webhook_secret(padded.rstrip("=")) == b"k" * 25


def test_bad_ids_and_timestamps_are_refused_when_signing() -> None:
    with pytest.raises(ValueError, match="id"):
        sign(SECRET, "a b", TIMESTAMP, BODY)
    with pytest.raises(ValueError, match="id"):
        sign(SECRET, "é", TIMESTAMP, BODY)
    with pytest.raises(ValueError, match="timestamp"):
        sign(SECRET, MSG_ID, -1, BODY)
