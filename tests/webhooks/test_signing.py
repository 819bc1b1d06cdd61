"""Standard Webhooks signing and verification, against the specification's own vector."""

from __future__ import annotations

import pytest

from vbank.webhooks.signing import (
    SignatureError,
    headers,
    new_secret,
    secret_bytes,
    sign,
    verify,
)

# From the Standard Webhooks reference library's test suite
# (standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_matches_the_specification_vector() -> None:
    assert sign([secret_bytes(SPEC_SECRET)], SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    hdrs = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS)}
    hdrs["webhook-signature"] = SPEC_SIGNATURE
    assert verify([SPEC_SECRET], SPEC_BODY, hdrs, now=SPEC_TS + 10) == SPEC_ID


def test_secret_format_and_prefix_optional() -> None:
    s = new_secret()
    assert s.startswith("whsec_") and len(secret_bytes(s)) == 32
    assert secret_bytes(SPEC_SECRET) == secret_bytes(SPEC_SECRET.removeprefix("whsec_"))
    with pytest.raises(ValueError):
        secret_bytes("whsec_not base64!")
    with pytest.raises(ValueError):
        secret_bytes("whsec_AAAA")  # too short


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    old, new = new_secret(), new_secret()
    hdrs = headers([secret_bytes(old), secret_bytes(new)], "msg_1", 1000, b"{}")
    sigs = hdrs["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    assert verify([old], b"{}", hdrs, now=1000) == "msg_1"
    assert verify([new], b"{}", hdrs, now=1000) == "msg_1"
    with pytest.raises(SignatureError):
        verify([new_secret()], b"{}", hdrs, now=1000)


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-id": "msg_other"},
        {"webhook-timestamp": "1001"},
        {"webhook-timestamp": "soon"},
        {"webhook-signature": "v2," + SPEC_SIGNATURE.removeprefix("v1,")},
        {"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="},
    ],
)
def test_tampering_is_refused(change: dict[str, str]) -> None:
    hdrs = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TS),
        "webhook-signature": SPEC_SIGNATURE,
    }
    hdrs.update(change)
    with pytest.raises(SignatureError):
        verify([SPEC_SECRET], SPEC_BODY, hdrs, now=SPEC_TS)


def test_body_change_missing_headers_and_stale_timestamps_are_refused() -> None:
    hdrs = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TS),
        "webhook-signature": SPEC_SIGNATURE,
    }
    with pytest.raises(SignatureError):
        verify([SPEC_SECRET], SPEC_BODY + b" ", hdrs, now=SPEC_TS)
    with pytest.raises(SignatureError):
        verify([SPEC_SECRET], SPEC_BODY, {"webhook-id": SPEC_ID}, now=SPEC_TS)
    with pytest.raises(SignatureError):
        verify([SPEC_SECRET], SPEC_BODY, hdrs, now=SPEC_TS + 301)
    assert verify([SPEC_SECRET], SPEC_BODY, hdrs, now=SPEC_TS - 299) == SPEC_ID
