"""Atomic file writes that everything may import (no torch at import time).

A crash (even SIGKILL) at any moment leaves either the old file or the new one under a path,
never a half-written one; a full disk is one clear error that says whether the old file survives.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".tmp-"  # temp files beside their target; a crash may leave one, never a half-written target
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """The disk (or the user's quota) filled up during a write; the previous file is untouched."""


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync it and os.replace it onto `path`.

    A crash (even SIGKILL) at any moment leaves either the old file or the new one, never a
    half-written file under `path`; on an exception the temp file is removed, and a full disk
    raises one DiskFullError that says whether a previous file survives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            previous = f"the previous {_kind(path)} {path} is intact" if path.exists() else "no previous file existed"
            reason = os.strerror(exc.errno).lower()  # "no space left on device" / "disk quota exceeded"
            raise DiskFullError(exc.errno, f"{reason} while writing {path}; {previous}") from None
        raise
    _fsync_dir(path.parent)


def _kind(path: Path) -> str:
    return "checkpoint" if path.suffix == ".ckpt" else "file"


class _WriteErrors:
    """A binary file whose first write error is kept: torch.save turns it into a RuntimeError without errno."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh: IO[bytes] = fh
        self.error: OSError | None = None

    def __getattr__(self, name: str) -> Any:  # flush, tell, …: the file's
        return getattr(self.fh, name)

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through `atomic_open`; a full disk is a DiskFullError (torch reports it as a RuntimeError)."""
    import torch

    with atomic_open(path, "wb") as fh:
        recorder = _WriteErrors(fh)
        try:
            torch.save(obj, recorder)
        except RuntimeError:
            if recorder.error is not None:  # the OSError under torch's message: atomic_open reports ENOSPC/EDQUOT
                raise recorder.error from None
            raise


def atomic_write_text(text: str, path: str | Path) -> None:
    """A text file (metrics.json, predictions) through `atomic_open`."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(obj: Any, path: str | Path) -> None:
    """Indented, key-sorted JSON (metrics.json, provenance.json) through `atomic_open`."""
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)
