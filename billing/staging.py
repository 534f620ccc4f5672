"""Outputs are written to temporary files beside their targets and renamed only once all exist."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO


class Staging:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._staged: list[tuple[Path, Path]] = []

    def open(self, name: str) -> IO[bytes]:
        """A new temporary file that becomes `name` on `commit()`."""
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - handed to the caller to close
            mode="wb", dir=self.directory, prefix=f".{name}.", suffix=".tmp", delete=False
        )
        self._staged.append((Path(handle.name), self.directory / name))
        return handle

    def write(self, name: str, content: bytes) -> None:
        with self.open(name) as handle:
            handle.write(content)

    @property
    def names(self) -> list[str]:
        return [target.name for _, target in self._staged]

    def commit(self) -> None:
        umask = os.umask(0o022)
        os.umask(umask)
        for temporary, target in self._staged:
            os.chmod(temporary, 0o666 & ~umask)
            os.replace(temporary, target)
        self._staged.clear()

    def abort(self) -> None:
        for temporary, _ in self._staged:
            temporary.unlink(missing_ok=True)
        self._staged.clear()
