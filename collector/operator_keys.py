"""Operators' own Ed25519 keys: made and used on the operator's machine, never on the collector.

The key file is PKCS#8 PEM encrypted with the operator's passphrase (`RMM_OPERATOR_PASSPHRASE`,
or asked for on the terminal), mode 0600. Its public line, `<key_id>:<base64>`, is what agents
pin in `operator_keys` and what `rmm-collector operator add` registers for display.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wire.signing import pin_line

PASSPHRASE_ENV = "RMM_OPERATOR_PASSPHRASE"
MIN_PASSPHRASE = 8


class OperatorKeyError(Exception):
    """A key file that cannot be made or opened; the message says what to do."""


def _passphrase(key_file: Path, *, confirm: bool) -> bytes:
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        if not sys.stdin.isatty():
            raise OperatorKeyError(
                f"give the passphrase of {key_file} in {PASSPHRASE_ENV} or run on a terminal"
            )
        value = getpass.getpass(f"passphrase for {key_file}: ")
        if confirm and getpass.getpass("the same passphrase again: ") != value:
            raise OperatorKeyError("the two passphrases differ; nothing was written")
    if confirm and len(value) < MIN_PASSPHRASE:
        raise OperatorKeyError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    return value.encode()


def generate(key_file: Path) -> str:
    """Make a new key in `key_file` (which must not exist yet); its public line."""
    passphrase = _passphrase(key_file, confirm=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise OperatorKeyError(f"{key_file} exists already; a key is never overwritten") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return pin_line(key.public_key())


def load(key_file: Path) -> Ed25519PrivateKey:
    """The private key in `key_file`, decrypted with the operator's passphrase."""
    try:
        data = key_file.read_bytes()
    except OSError as exc:
        raise OperatorKeyError(f"cannot read the key file {key_file}: {exc.strerror}") from exc
    if key_file.stat().st_mode & 0o077:
        raise OperatorKeyError(
            f"{key_file} can be read by others; `chmod 600 {key_file}` (and consider the key "
            "exposed if others could read it)"
        )
    try:
        key = serialization.load_pem_private_key(data, _passphrase(key_file, confirm=False))
    except (ValueError, TypeError) as exc:
        raise OperatorKeyError(
            f"{key_file} does not open with that passphrase (or is not an operator key)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise OperatorKeyError(f"{key_file} holds no Ed25519 key")
    return key
