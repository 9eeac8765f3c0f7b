"""Atomic file writes and file checksums, shared by every stage that writes results.

Snakemake, a concurrent job or the next stage may look at an output at any moment, so an output
path must hold either the old file or the complete new one, never a truncated one: each write goes
to a hidden temporary file in the same folder (same filesystem, so the rename is atomic), is
fsynced, and is moved into place with ``os.replace``. A process killed mid-write leaves at most a
hidden ``.{name}.*.tmp`` file, which globs such as ``*.parquet`` do not match; a write that fails
inside the process removes its temporary file.

Any writer that accepts a path fits ``atomic_write``: ``pq.write_table(table, tmp)``,
``frame.to_parquet(tmp)``, ``torch.save(obj, tmp)``, ``tmp.write_text(...)``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place.

    The parent folder is created if needed. ``write`` must write the whole file at the path it is
    given (it may open it any number of times); the result gets the permissions a plain ``open()``
    would have given it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600, which would hide results from the group of a shared project folder.
        os.chmod(tmp, 0o666 & ~_current_umask())
        write(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        # BaseException too: a KeyboardInterrupt (or SIGTERM turned into one) mid-write must not
        # leave the temporary file behind.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8, byte for byte (no newline translation), atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_path(path: Path) -> None:
    # The data must be on disk before the rename makes it visible, or a power loss can leave a
    # complete-looking name with empty contents. Linux flushes the file for any descriptor.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows opening a directory.
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
