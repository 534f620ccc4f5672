"""Strict checks on Ed25519 encodings that a verifier library may accept: weak public keys and
non-canonical signatures.

A pinned public key of small order (one of the eight points whose multiples never leave the
torsion subgroup) lets forgeries verify for every message; a key with a non-canonical encoding
(y >= p, or x = 0 with the sign bit set) names a point under a second spelling. A signature whose
S is not below the group order L is malleable (RFC 8032, section 5.1.7). Pure integer arithmetic:
run once per pin when the config is read, and once per signature before the library verifies it.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, P - 2, P)) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)


def public_key_problem(raw: bytes) -> str | None:
    """Why `raw` must not be pinned as an Ed25519 public key, or None if it is a sound key."""
    if len(raw) != 32:
        return f"an Ed25519 public key is 32 bytes, not {len(raw)}"
    point = _decode_point(raw)
    if isinstance(point, str):
        return point
    if _is_small_order(point):
        return "it is a point of small order, under which forged signatures verify"
    return None


def key_id_for_raw(raw: bytes) -> str:
    """`key_id_for` from the raw 32 bytes, without loading the crypto library."""
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def pin_problem(key_id: str, raw: bytes) -> str | None:
    """Why `key_id:raw` must not be pinned (weak key, or an id that is not the key's), or None."""
    if key_id_for_raw(raw) != key_id:
        return f"the key id does not match its public key (that key's id is {key_id_for_raw(raw)})"
    problem = public_key_problem(raw)
    if problem is not None:
        return f"not a usable Ed25519 public key: {problem}"
    return None


def is_canonical_signature(signature: bytes) -> bool:
    """A 64-byte signature whose S half is below the group order L."""
    return len(signature) == 64 and int.from_bytes(signature[32:], "little") < L


def _decode_point(raw: bytes) -> tuple[int, int] | str:
    encoded = int.from_bytes(raw, "little")
    sign = encoded >> 255
    y = encoded & ((1 << 255) - 1)
    if y >= P:
        return "its encoding is not canonical (y is not below 2^255 - 19)"
    u = (y * y - 1) % P
    v = (_D * y * y + 1) % P
    x_squared = u * pow(v, P - 2, P) % P
    x = pow(x_squared, (P + 3) // 8, P)
    if (x * x - x_squared) % P != 0:
        x = x * _SQRT_M1 % P
    if (x * x - x_squared) % P != 0:
        return "it is not a point on the Ed25519 curve"
    if x == 0 and sign == 1:
        return "its encoding is not canonical (x is 0 but the sign bit is set)"
    if x & 1 != sign:
        x = P - x
    return x, y


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    return x3, y3


def _is_small_order(point: tuple[int, int]) -> bool:
    """[8]point is the neutral element (0, 1) exactly for the eight torsion points."""
    for _ in range(3):
        point = _add(point, point)
    return point == (0, 1)


__all__ = [
    "L",
    "P",
    "is_canonical_signature",
    "key_id_for_raw",
    "pin_problem",
    "public_key_problem",
]
