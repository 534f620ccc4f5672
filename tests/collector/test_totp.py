"""RFC 6238 one-time codes: the RFC's own SHA-1 test vectors, the drift allowed, the URI."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from collector import totp

# RFC 6238 Appendix B: the SHA-1 seed is the ASCII "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("unix_time", "expected"), RFC_VECTORS)
def test_rfc_6238_sha1_vectors(unix_time: int, expected: str) -> None:
    key = base64.b32decode(RFC_SECRET)
    step = unix_time // 30
    assert totp.hotp(key, step, digits=8) == expected
    # Six digits are the last six of the RFC's eight.
    assert totp.code_at(RFC_SECRET, datetime.fromtimestamp(unix_time, UTC)) == expected[-6:]


def test_a_code_matches_its_own_step_and_one_either_side_only() -> None:
    moment = datetime.fromtimestamp(1111111111, UTC)
    step = totp.step_at(moment)
    code = totp.code_at(RFC_SECRET, moment)
    assert totp.matching_step(RFC_SECRET, code, moment) == step
    for drift, found in ((-30, step), (30, step), (-60, None), (90, None)):
        later = datetime.fromtimestamp(1111111111 + drift, UTC)
        assert totp.matching_step(RFC_SECRET, code, later) == found


@pytest.mark.parametrize("given", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"])
def test_codes_that_are_not_six_ascii_digits_never_match(given: str) -> None:
    assert totp.matching_step(RFC_SECRET, given, datetime.now(UTC)) is None


def test_the_provisioning_uri_names_the_account_and_every_parameter() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32 and len(base64.b32decode(secret)) == 20
    uri = urlsplit(totp.provisioning_uri(secret, "ana@noc"))
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert uri.path == "/RMM%20Collector:ana@noc"
    query = {k: v[0] for k, v in parse_qs(uri.query).items()}
    assert query == {
        "secret": secret,
        "issuer": "RMM Collector",
        "algorithm": "SHA1",
        "digits": "6",
        "period": "30",
    }
