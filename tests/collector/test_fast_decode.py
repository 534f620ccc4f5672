"""The heartbeat's fast decoder answers every body exactly as the strict wire struct does: the
same accepted values, the same refusals with the same messages."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest

from collector.fast_decode import FastDecoder
from collector.network_buffer import ReceivedHeartbeat

GOOD_COMPONENTS = (
    b'[{"name":"rmm","status":"running","version":"0.1.0","required":true},'
    b'{"name":"antivirus","status":"stopped","version":null}]'
)

BODIES = [
    b'{"components":' + GOOD_COMPONENTS + b',"hostname":"pc-1","os":"Windows 11","kind":"pc"}',
    b'{"components":[],"unknown_field":{"a":1},"network":{"macs":["aa:bb:cc:dd:ee:ff"]}}',
    b'{"components":[],"network":null,"offboard_approvals":2,"operator_key_ids":["op-1"]}',
    # A NUL reaches a JSON string only as an escape; each text field is refused for it.
    b'{"components":[],"hostname":"pc\\u0000"}',
    b'{"components":[],"os":"\\u0000"}',
    b'{"components":[{"name":"rmm","status":"running","version":"1\\u0000"}]}',
    b'{"components":[],"users":["ann","\\u0000bob"]}',
    # An escaped backslash followed by "u0000" is text, not a NUL: accepted.
    b'{"components":[],"hostname":"pc\\\\u0000"}',
    # Component names follow the agent config's rule.
    b'{"components":[{"name":"bad name","status":"running"}]}',
    b'{"components":[{"name":"","status":"running"}]}',
    b'{"components":[{"name":"' + b"a" * 65 + b'","status":"running"}]}',
    b'{"components":[{"name":"rmm\\n","status":"running"}]}',
    # Everything else the struct checks.
    b'{"components":[{"name":"rmm","status":"sleeping"}]}',
    b'{"components":"none"}',
    b'{"hostname":"pc-1"}',
    b'{"components":[],"hostname":""}',
    b'{"components":[],"kind":"laptop"}',
    b'{"components":[],"offboard_approvals":17}',
    b'{"components":[],"key_ids":[' + b",".join([b'"k"'] * 17) + b"]}",
    b'{"components":[]',
    b"[]",
]


def outcome(decode: object, body: bytes) -> tuple[str, object]:
    try:
        value = decode(body)  # type: ignore[operator]
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return (type(exc).__name__, str(exc))
    return ("accepted", plain(value))


def plain(value: object) -> object:
    """The decoded value as plain data (the two decoders' struct classes differ by name)."""
    if isinstance(value, msgspec.Struct):
        return {name: plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, msgspec.Raw):
        return bytes(value)
    return value


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_fast_decoder_answers_as_the_strict_struct(body: bytes) -> None:
    strict = msgspec.json.Decoder(ReceivedHeartbeat).decode
    fast = FastDecoder(ReceivedHeartbeat).decode
    assert outcome(fast, body) == outcome(strict, body)
    # A second time, with the component names it has already found good remembered.
    assert outcome(fast, body) == outcome(strict, body)


def test_a_struct_with_a_pattern_it_cannot_check_is_refused_at_once() -> None:
    class Odd(msgspec.Struct):
        components: list[str]
        code: Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]

    with pytest.raises(ValueError, match="cannot check"):
        FastDecoder(Odd)
