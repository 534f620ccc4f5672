"""Unit vectors for the two-person offboard order verifier (`wire/orders.py`): only distinct
pinned operator keys with a good signature over the exact order bytes count, and an order that
was altered, aimed elsewhere or expired is refused with a reason. Real Ed25519 keys throughout;
the Wycheproof vectors come from `data/wycheproof_ed25519.json` (its source is named inside)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wire.ed25519 import L, is_canonical_signature, public_key_problem
from wire.messages import Approval, SignedCommand
from wire.orders import (
    OffboardOrder,
    OrderMalformed,
    OrderRefused,
    count_approvals,
    decode_order,
    encode_order,
    order_digest,
    sign_order,
    verify_order,
)
from wire.signing import (
    CommandPayload,
    key_id_for,
    key_id_for_raw,
    parse_pin,
    pin_line,
    pin_problem,
)
from wire.times import format_instant

NOW = datetime(2026, 3, 7, 14, 0, tzinfo=UTC)
ALICE = Ed25519PrivateKey.generate()
BOB = Ed25519PrivateKey.generate()
MALLORY = Ed25519PrivateKey.generate()
PINNED = {key_id_for(k.public_key()): k.public_key() for k in (ALICE, BOB)}
VECTORS = json.loads((Path(__file__).parent / "data" / "wycheproof_ed25519.json").read_text())


def order(**changes: object) -> OffboardOrder:
    fields: dict[str, object] = {
        "order_id": "order-1",
        "command_id": "cmd-1",
        "type": "offboard",
        "agent_id": "agent-1",
        "machine_id": "machine-1",
        "client_id": "client-1",
        "hostname": "reception-pc",
        "requester": "tina",
        "reason": "contract ended",
        "ticket": "T-9",
        "components": ["antivirus", "rmm"],
        "issued_at": format_instant(NOW - timedelta(hours=1)),
        "not_after": format_instant(NOW + timedelta(days=7)),
    }
    fields.update(changes)
    return OffboardOrder(**fields)  # type: ignore[arg-type]


def verify(
    data: bytes,
    approvals: list[Approval],
    *,
    digest: str | None = None,
    required: int = 2,
    now: datetime = NOW,
    machine_id: str = "machine-1",
) -> OffboardOrder:
    return verify_order(
        base64.b64encode(data).decode(),
        approvals,
        order_sha256=digest or order_digest(data),
        command_id="cmd-1",
        agent_id="agent-1",
        machine_id=machine_id,
        pinned=PINNED,
        required=required,
        now=now,
    )


def refusal(data: bytes, approvals: list[Approval], **kwargs: object) -> OrderRefused:
    with pytest.raises(OrderRefused) as caught:
        verify(data, approvals, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_the_requester_and_a_second_operator_make_an_order_valid() -> None:
    data = encode_order(order())
    assert verify(data, [sign_order(data, ALICE), sign_order(data, BOB)]) == order()


def test_order_fields_are_signed_in_the_documented_order() -> None:
    assert list(OffboardOrder.__struct_fields__) == [
        "order_id",
        "command_id",
        "type",
        "agent_id",
        "machine_id",
        "client_id",
        "hostname",
        "requester",
        "reason",
        "ticket",
        "components",
        "issued_at",
        "not_after",
    ]
    assert decode_order(encode_order(order())) == order()


def test_one_signature_is_not_enough() -> None:
    data = encode_order(order())
    refused = refusal(data, [sign_order(data, ALICE)])
    assert refused.code == "insufficient_approvals"
    assert "1 of 2 required" in refused.detail


def test_the_same_key_twice_counts_once() -> None:
    data = encode_order(order())
    refused = refusal(data, [sign_order(data, ALICE), sign_order(data, ALICE)])
    assert refused.code == "insufficient_approvals"
    assert f"{key_id_for(ALICE.public_key())} (repeated)" in refused.detail


def test_a_key_that_is_not_pinned_does_not_count() -> None:
    data = encode_order(order())
    refused = refusal(data, [sign_order(data, ALICE), sign_order(data, MALLORY)])
    assert refused.code == "insufficient_approvals"
    assert f"{key_id_for(MALLORY.public_key())} (unknown" in refused.detail


def test_with_no_operator_keys_pinned_every_order_is_refused() -> None:
    data = encode_order(order())
    with pytest.raises(OrderRefused) as caught:
        verify_order(
            base64.b64encode(data).decode(),
            [sign_order(data, ALICE), sign_order(data, BOB)],
            order_sha256=order_digest(data),
            command_id="cmd-1",
            agent_id="agent-1",
            machine_id="machine-1",
            pinned={},
            required=2,
            now=NOW,
        )
    assert caught.value.code == "insufficient_approvals"
    assert "no operator keys are pinned" in caught.value.detail


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "contract ended!"},
        {"components": ["antivirus", "backup", "rmm"]},
        {"not_after": format_instant(NOW + timedelta(days=8))},
    ],
    ids=["reason", "components", "not_after"],
)
def test_an_order_altered_after_signing_is_refused(change: dict[str, object]) -> None:
    signed = encode_order(order())
    approvals = [sign_order(signed, ALICE), sign_order(signed, BOB)]
    altered = encode_order(order(**change))
    # The collector (or an attacker holding it) re-binds its delivery to the altered bytes:
    refused = refusal(altered, approvals)
    assert refused.code == "insufficient_approvals"
    assert "bad signature" in refused.detail
    # ... or does not, and the digest gives it away:
    assert refusal(altered, approvals, digest=order_digest(signed)).code == "order_digest_mismatch"


def test_an_order_for_another_machine_is_refused_even_with_two_approvals() -> None:
    data = encode_order(order(machine_id="machine-2"))
    refused = refusal(data, [sign_order(data, ALICE), sign_order(data, BOB)])
    assert refused.code == "order_mismatch" and "machine-2" in refused.detail


def test_an_expired_order_is_refused_with_both_times() -> None:
    data = encode_order(
        order(
            issued_at=format_instant(NOW - timedelta(days=8)),
            not_after=format_instant(NOW - timedelta(days=1)),
        )
    )
    refused = refusal(data, [sign_order(data, ALICE), sign_order(data, BOB)])
    assert refused.code == "order_expired"
    assert format_instant(NOW) in refused.detail and "+86400 s" in refused.detail


def test_five_minutes_of_clock_skew_are_allowed_either_side() -> None:
    data = encode_order(
        order(
            issued_at=format_instant(NOW + timedelta(minutes=4)),
            not_after=format_instant(NOW + timedelta(days=1)),
        )
    )
    approvals = [sign_order(data, ALICE), sign_order(data, BOB)]
    assert verify(data, approvals)
    assert refusal(data, approvals, now=NOW - timedelta(minutes=2)).code == "order_not_yet_valid"
    assert verify(data, approvals, now=NOW + timedelta(days=1, minutes=4))
    assert refusal(data, approvals, now=NOW + timedelta(days=1, minutes=6)).code == "order_expired"


def test_an_order_meant_to_live_for_months_is_refused() -> None:
    data = encode_order(order(not_after=format_instant(NOW + timedelta(days=90))))
    refused = refusal(data, [sign_order(data, ALICE), sign_order(data, BOB)])
    assert refused.code == "order_lifetime_too_long"


@pytest.mark.parametrize(
    ("signature", "why"),
    [
        ("not base64!", "malformed: the signature is not base64"),
        (base64.b64encode(b"\x01" * 63).decode(), "malformed: 63 bytes, not 64"),
        (base64.b64encode(b"\x01" * 65).decode(), "malformed: 65 bytes, not 64"),
        ("", "malformed: 0 bytes, not 64"),
    ],
    ids=["garbage", "63-bytes", "65-bytes", "empty"],
)
def test_malformed_signatures_do_not_count(signature: str, why: str) -> None:
    data = encode_order(order())
    approvals = [
        sign_order(data, ALICE),
        Approval(key_id=key_id_for(BOB.public_key()), signature=signature),
    ]
    refused = refusal(data, approvals)
    assert refused.code == "insufficient_approvals" and why in refused.detail


def test_a_non_canonical_signature_s_plus_l_does_not_count() -> None:
    data = encode_order(order())
    genuine = base64.b64decode(sign_order(data, BOB).signature)
    s = int.from_bytes(genuine[32:], "little")
    malleated = genuine[:32] + (s + L).to_bytes(32, "little")
    assert not is_canonical_signature(malleated)
    approvals = [
        sign_order(data, ALICE),
        Approval(
            key_id=key_id_for(BOB.public_key()), signature=base64.b64encode(malleated).decode()
        ),
    ]
    refused = refusal(data, approvals)
    assert refused.code == "insufficient_approvals" and "not canonical" in refused.detail


@pytest.mark.parametrize(
    ("order_b64", "code"),
    [
        (None, "order_missing"),
        ("", "order_missing"),
        ("%%%", "order_malformed"),
    ],
)
def test_a_missing_or_unreadable_order_is_refused(order_b64: str | None, code: str) -> None:
    with pytest.raises(OrderRefused) as caught:
        verify_order(
            order_b64,
            [],
            order_sha256="00",
            command_id="cmd-1",
            agent_id="agent-1",
            machine_id="machine-1",
            pinned=PINNED,
            required=2,
            now=NOW,
        )
    assert caught.value.code == code


def test_order_bytes_that_are_not_an_order_are_malformed() -> None:
    data = b'{"order_id": "x"}'
    with pytest.raises(OrderMalformed):
        decode_order(data)
    assert refusal(data, []).code == "order_malformed"


def test_zero_required_approvals_still_binds_the_order_to_the_delivery() -> None:
    data = encode_order(order())
    assert verify(data, [], required=0) == order()
    assert refusal(data, [], required=0, machine_id="machine-9").code == "order_mismatch"
    assert refusal(data, [], required=0, digest="ab" * 32).code == "order_digest_mismatch"


def test_envelopes_and_payloads_carry_the_order_optionally() -> None:
    legacy = msgspec.json.decode(
        b'{"command_id": "c", "key_id": "k", "payload": "p", "signature": "s"}', type=SignedCommand
    )
    assert legacy.order is None and legacy.approvals is None
    payload = msgspec.json.decode(
        b'{"command_id": "c", "type": "offboard", "agent_id": "a", "machine_id": "m",'
        b' "client_id": "c", "issuer": "i", "reason": "r", "sequence": 1, "issued_at": "x",'
        b' "expires_at": "y", "key_id": "k"}',
        type=CommandPayload,
    )
    assert payload.order_sha256 is None


# Wycheproof: a signature counts exactly when the vector says it is valid.


@pytest.mark.parametrize(
    "vector", VECTORS["tests"], ids=[f"tc{t['tcId']}-{t['flag']}" for t in VECTORS["tests"]]
)
def test_wycheproof_ed25519_vector(vector: dict[str, object]) -> None:
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(vector["pk"])))
    key_id = key_id_for(public)
    approval = Approval(
        key_id=key_id, signature=base64.b64encode(bytes.fromhex(str(vector["sig"]))).decode()
    )
    tally = count_approvals(bytes.fromhex(str(vector["msg"])), [approval], {key_id: public})
    assert (tally.counted == (key_id,)) is (vector["result"] == "valid")


# Weak pinned keys: the eight small-order points, and encodings of a point that are not canonical.

SMALL_ORDER_KEYS = {
    "identity (order 1)": "01" + "00" * 31,
    "order 2": "ec" + "ff" * 30 + "7f",
    "order 4": "00" * 32,
    "order 4, sign bit": "00" * 31 + "80",
    "order 8": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8, sign bit": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "order 8 (other)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8 (other), sign bit": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}
NON_CANONICAL_KEYS = {
    "y = p": "ed" + "ff" * 30 + "7f",
    "y = p + 1": "ee" + "ff" * 30 + "7f",
    "x = 0 with the sign bit": "01" + "00" * 30 + "80",
    "y = 2^255 - 1": "ff" * 32,
}


@pytest.mark.parametrize("encoded", SMALL_ORDER_KEYS.values(), ids=SMALL_ORDER_KEYS.keys())
def test_small_order_public_keys_are_refused(encoded: str) -> None:
    assert "small order" in (public_key_problem(bytes.fromhex(encoded)) or "")


@pytest.mark.parametrize("encoded", NON_CANONICAL_KEYS.values(), ids=NON_CANONICAL_KEYS.keys())
def test_non_canonical_public_keys_are_refused(encoded: str) -> None:
    problem = public_key_problem(bytes.fromhex(encoded)) or ""
    assert "not canonical" in problem or "small order" in problem


def test_every_wycheproof_public_key_and_a_fresh_key_are_sound() -> None:
    for raw in {bytes.fromhex(t["pk"]) for t in VECTORS["tests"]}:
        assert public_key_problem(raw) is None
    fresh = Ed25519PrivateKey.generate().public_key()
    assert parse_pin(pin_line(fresh))[0] == key_id_for(fresh)


def test_a_pin_whose_key_id_is_not_its_keys_is_refused() -> None:
    other = pin_line(BOB.public_key()).partition(":")[2]
    line = f"{key_id_for(ALICE.public_key())}:{other}"
    with pytest.raises(ValueError, match="does not match"):
        parse_pin(line)
    small = bytes.fromhex(SMALL_ORDER_KEYS["order 8"])
    assert "small order" in (pin_problem(key_id_for_raw(small), small) or "")
    assert "does not match" in (pin_problem("ed25519-0123456789abcdef", small) or "")
