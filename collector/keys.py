"""Command-signing keys: Ed25519 private keys in files (mode 0600) in one folder.

Every collector instance that signs is given the same folder. Active keys sit at the top level,
named `<created>_<key_id>.pem` so that the newest sorts last; `retire` keeps only the public
line of a key, in `retired/<created>_<key_id>.pub`, and destroys its private half, so a retired
key can sign nothing more, even for someone who reads the folder. Private keys never leave these
files: not in responses, not in logs.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from wire.signing import key_id_for, pin_line

log = logging.getLogger(__name__)


class KeyFileError(Exception):
    """A key file or folder that cannot be used safely (the message says why)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    created: str
    private_key: Ed25519PrivateKey

    @property
    def pin(self) -> str:
        return pin_line(self.private_key.public_key())


def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path} is readable by others (mode {mode:o}); run chmod 600 on it")


class KeyRing:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._keys: list[SigningKey] = []
        self._listing: tuple[str, ...] = ()
        self._retired_checked = False

    def load(self) -> list[SigningKey]:
        """Read the active keys again if the folder changed; oldest first."""
        if not self.folder.is_dir():
            self._keys, self._listing = [], ()
            return self._keys
        if not self._retired_checked:
            self._retired_checked = True
            if self.retire_old_private_files():
                log.warning("retired keys in %s now keep only their public halves", self.folder)
        listing = tuple(sorted(p.name for p in self.folder.glob("*.pem")))
        if listing == self._listing:
            return self._keys
        keys = []
        for name in listing:
            path = self.folder / name
            _check_private(path)
            private = load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise KeyFileError(f"{path} is not an Ed25519 private key")
            created, _, key_id = path.stem.partition("_")
            if key_id != key_id_for(private.public_key()):
                raise KeyFileError(f"{path} is named for another key than it holds")
            keys.append(SigningKey(key_id=key_id, created=created, private_key=private))
        self._keys, self._listing = keys, listing
        return keys

    @property
    def active(self) -> list[SigningKey]:
        return list(self._keys)

    def signing_key(self, pinned_ids: list[str] | None) -> SigningKey | None:
        """The newest active key the agent pins (the newest of all if it named none)."""
        for key in reversed(self._keys):
            if pinned_ids is None or key.key_id in pinned_ids:
                return key
        return None

    def generate(self, now: datetime) -> SigningKey:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        private = Ed25519PrivateKey.generate()
        key_id = key_id_for(private.public_key())
        created = now.strftime("%Y%m%dT%H%M%S%fZ")
        path = self.folder / f"{created}_{key_id}.pem"
        pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        self._listing = ()
        self.load()
        return SigningKey(key_id=key_id, created=created, private_key=private)

    def retire(self, key_id: str) -> SigningKey:
        self.load()
        for key in self._keys:
            if key.key_id == key_id:
                self._keep_public_half(
                    key.created, key.private_key, self.folder / f"{key.created}_{key.key_id}.pem"
                )
                self._listing = ()
                self.load()
                return key
        raise KeyFileError(f"no active key {key_id!r} (see `rmm-collector keys show`)")

    def _keep_public_half(self, created: str, private: Ed25519PrivateKey, pem: Path) -> None:
        """Write the public line to `retired/`, durably, then destroy the private file."""
        retired = self.folder / "retired"
        retired.mkdir(mode=0o700, exist_ok=True)
        public = retired / f"{created}_{key_id_for(private.public_key())}.pub"
        partial = public.with_suffix(".pub.partial")
        with open(partial, "w") as handle:
            handle.write(pin_line(private.public_key()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, public)
        size = pem.stat().st_size
        with open(pem, "r+b") as handle:  # overwrite before unlinking: no copy left on disk
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())
        pem.unlink()

    def retire_old_private_files(self) -> int:
        """Private files an earlier version left in `retired/` lose their private half."""
        count = 0
        for pem in sorted((self.folder / "retired").glob("*.pem")):
            _check_private(pem)
            private = load_pem_private_key(pem.read_bytes(), password=None)
            if isinstance(private, Ed25519PrivateKey):
                self._keep_public_half(pem.stem.partition("_")[0], private, pem)
                count += 1
        return count

    def retired(self) -> list[str]:
        """Public lines of retired keys, oldest first."""
        folder = self.folder / "retired"
        return [p.read_text().strip() for p in sorted(folder.glob("*.pub"))]
