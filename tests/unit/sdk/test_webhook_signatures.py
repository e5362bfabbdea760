from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tasksdk import InvalidSignature
from tasksdk.webhooks import secret_key, sign, signature_headers, verify_signature

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_800_000_000
BODY = b'{"type":"sh.keptn.event.checknumber.triggered"}'


def headers(secret: str = SECRET, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    return signature_headers(secret, "event-1.sub-1", body, timestamp=timestamp)


def test_the_standard_webhooks_reference_vector() -> None:
    signature = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_good_signature_verifies() -> None:
    verify_signature(SECRET, headers(), BODY, now=NOW)


def test_header_names_are_case_insensitive() -> None:
    upper = {name.upper(): value for name, value in headers().items()}

    verify_signature(SECRET, upper, BODY, now=NOW)


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verify_signature(
            "whsec_" + base64.b64encode(b"another key").decode(), headers(), BODY, now=NOW
        )


def test_a_tampered_body_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verify_signature(SECRET, headers(), BODY + b" ", now=NOW)


def test_a_tampered_id_is_refused() -> None:
    tampered = {**headers(), "webhook-id": "event-2.sub-1"}

    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, tampered, BODY, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, 10_000])
def test_timestamps_more_than_five_minutes_away_are_refused(skew: int) -> None:
    with pytest.raises(InvalidSignature, match="away from now"):
        verify_signature(SECRET, headers(timestamp=NOW + skew), BODY, now=NOW)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamps_within_five_minutes_are_accepted(skew: int) -> None:
    verify_signature(SECRET, headers(timestamp=NOW + skew), BODY, now=NOW)


def test_one_matching_signature_among_several_is_enough() -> None:
    good = headers()
    other = sign("an-old-secret-of-ours", "event-1.sub-1", NOW, BODY)
    several = {**good, "webhook-signature": f"v1a,c29tZXRoaW5n {other} {good['webhook-signature']}"}

    verify_signature(SECRET, several, BODY, now=NOW)


def test_several_signatures_none_matching_are_refused() -> None:
    bad = " ".join(sign(f"secret-number-{n:02d}", "event-1.sub-1", NOW, BODY) for n in range(3))

    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, {**headers(), "webhook-signature": bad}, BODY, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_are_refused(missing: str) -> None:
    partial = {name: value for name, value in headers().items() if name != missing}

    with pytest.raises(InvalidSignature, match="missing"):
        verify_signature(SECRET, partial, BODY, now=NOW)


def test_a_malformed_timestamp_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="malformed"):
        verify_signature(SECRET, {**headers(), "webhook-timestamp": "soon"}, BODY, now=NOW)


def test_a_whsec_secret_signs_with_its_decoded_key() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = hmac.new(key, f"id-1.{NOW}.".encode() + BODY, hashlib.sha256).digest()

    assert secret_key(secret) == key
    assert sign(secret, "id-1", NOW, BODY) == "v1," + base64.b64encode(expected).decode()


@pytest.mark.parametrize("secret", ["a-plain-secret-of-32-characters!", "whsec_not*base64*at*all"])
def test_other_secrets_sign_with_their_utf8_bytes(secret: str) -> None:
    expected = hmac.new(secret.encode(), f"id-1.{NOW}.".encode() + BODY, hashlib.sha256).digest()

    assert secret_key(secret) == secret.encode()
    assert sign(secret, "id-1", NOW, BODY) == "v1," + base64.b64encode(expected).decode()
    verify_signature(secret, signature_headers(secret, "id-1", BODY, timestamp=NOW), BODY, now=NOW)
