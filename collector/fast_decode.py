"""Heartbeat bodies decoded without a regular expression per string, with the same answers.

The wire structs refuse a NUL character in every text and odd component names by patterns, and
msgspec runs a pattern as one regular-expression search per string: ten of them in a typical
heartbeat, a quarter of the collector's work for it. Yet a NUL can reach a JSON string only as
the six bytes `\\u0000` (a raw control character is malformed JSON), and a fleet reports the same
few component names again and again. So `FastDecoder` decodes with a copy of the struct that
keeps every other constraint (lengths, literals, bounds) but no pattern, then checks those two
things itself: a body without `\\u0000` whose component names were already found good is
accepted as the strict struct would. Anything else, and every refusal, goes through the strict
decoder, whose answer (and error message) it is.
"""

from __future__ import annotations

import functools
import operator
import re
import types
import typing
from typing import Any, Generic, TypeVar, cast

import msgspec

from wire.messages import COMPONENT_NAME, NO_NUL

S = TypeVar("S")

_META_FIELDS = (
    "gt",
    "ge",
    "lt",
    "le",
    "multiple_of",
    "min_length",
    "max_length",
    "tz",
    "title",
    "description",
    "examples",
    "extra_json_schema",
    "extra",
)
_NUL_ESCAPE = b"\\u0000"


def without_patterns(tp: Any, removed: set[str], made: dict[type, type] | None = None) -> Any:
    """`tp` with every `pattern` constraint removed (added to `removed`), structs included
    (copied, same fields)."""
    made = {} if made is None else made
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(tp)
        removed.update(e.pattern for e in extras if isinstance(e, msgspec.Meta) and e.pattern)
        kept = [_meta_without_pattern(e) if isinstance(e, msgspec.Meta) else e for e in extras]
        return typing.Annotated[(without_patterns(base, removed, made), *kept)]
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(
            operator.or_, (without_patterns(a, removed, made) for a in typing.get_args(tp))
        )
    if origin in (list, tuple, set, frozenset, dict):
        return origin[tuple(without_patterns(a, removed, made) for a in typing.get_args(tp))]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct_without_patterns(tp, removed, made)
    return tp


def _meta_without_pattern(meta: msgspec.Meta) -> msgspec.Meta:
    kept = {name: getattr(meta, name) for name in _META_FIELDS}
    return msgspec.Meta(**{k: v for k, v in kept.items() if v is not None})


def _struct_without_patterns(
    cls: type[msgspec.Struct], removed: set[str], made: dict[type, type]
) -> type:
    if cls not in made:
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for field in msgspec.structs.fields(cls):
            if field.default is not msgspec.NODEFAULT:
                fields.append(
                    (field.name, without_patterns(field.type, removed, made), field.default)
                )
            elif field.default_factory is not msgspec.NODEFAULT:
                default = msgspec.field(default_factory=field.default_factory)
                fields.append((field.name, without_patterns(field.type, removed, made), default))
            else:
                fields.append((field.name, without_patterns(field.type, removed, made)))
        config = cls.__struct_config__
        made[cls] = msgspec.defstruct(
            f"Lenient{cls.__name__}",
            fields,
            kw_only=True,
            frozen=config.frozen,
            forbid_unknown_fields=config.forbid_unknown_fields,
            rename=None,
        )
    return made[cls]


class FastDecoder(Generic[S]):
    """Decodes `struct` bodies; `struct` must have a `components` list of named components,
    whose names are the only patterns other than NUL it checks (as heartbeats have)."""

    def __init__(self, struct: type[S], remember: int = 4096) -> None:
        removed: set[str] = set()
        self._strict = msgspec.json.Decoder(struct)
        self._lenient = msgspec.json.Decoder(without_patterns(struct, removed))
        unchecked = removed - {NO_NUL, COMPONENT_NAME}
        if unchecked:
            raise ValueError(
                f"{struct.__name__} has patterns this decoder cannot check: {unchecked}"
            )
        self._good_names: set[str] = set()
        self._remember = remember
        self._name = re.compile(COMPONENT_NAME)

    def decode(self, body: bytes) -> S:
        if _NUL_ESCAPE not in body:
            try:
                decoded = self._lenient.decode(body)
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass  # the strict decoder says why
            else:
                if all(self._good(c.name) for c in decoded.components):
                    return cast(S, decoded)
        return self._strict.decode(body)

    def _good(self, name: str) -> bool:
        if name in self._good_names:
            return True
        if self._name.search(name) is None:  # as msgspec applies a pattern
            return False
        if len(self._good_names) < self._remember:
            self._good_names.add(name)
        return True
