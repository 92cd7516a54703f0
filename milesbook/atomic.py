"""Files written whole: every file milesbook writes (a run's tables and checkpoints, a report, a
prepared dataset, a book page) goes through a temporary file beside it and a rename, so a killed
process never leaves half a file, and several processes writing one file (a search's workers) each
install a whole one. Imports nothing of milesbook but errors: a low module (docs/layout.md).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file of this process in `path`'s folder (made if need be), then
    rename it to `path`; a failing `write` leaves `path` as it was and no temporary file behind. The
    rename replaces a link that stood at `path` rather than writing through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file should read like any other
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, encoding: str | None = None) -> None:
    """`text` written whole to `path` (`encoding` as `Path.write_text`'s)."""
    atomic_write(Path(path), lambda p: p.write_text(text, encoding=encoding))


def save_npz(path: Path, **arrays) -> None:
    """`np.savez(path, **arrays)` written whole (through a file object: np.savez would add ".npz" to a
    temporary file's name)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(Path(path), write)


def check_writable(folder: Path, alternative: str) -> None:
    """Refuse, before anything is written, a folder this process cannot create files in (creating it
    if need be): found halfway, a read-only location would end in a traceback and half a result.
    `alternative` says where else the user can write, e.g. "choose another --out"."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"cannot write in {folder} ({error.strerror or error}): give this user write access to "
                        f"it, or {alternative}") from None
