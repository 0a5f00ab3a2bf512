"""A full disk while saving a checkpoint is one DiskFullError naming the file (not torch's RuntimeError): the
previous checkpoint is intact and the temp file is removed."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import IO, Any

import pytest
import torch

from emotionsumm.runs import atomic
from emotionsumm.runs.atomic import TMP_PREFIX, DiskFullError, atomic_save

OLD = {"step": 1, "w": torch.arange(10.0)}
BIG = {"step": 2, "w": torch.zeros(500_000)}  # 2 MB


class FillsUp:
    """A file on a disk with `room` bytes left: a write beyond it fails with ENOSPC, as the kernel says it."""

    def __init__(self, fh: IO[bytes], room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> FillsUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def assert_reported(path: Path, err: pytest.ExceptionInfo, previous: bool) -> None:
    assert err.value.errno == errno.ENOSPC
    survived = f"the previous checkpoint {path} is intact" if previous else "no previous file existed"
    assert str(err.value) == f"[Errno 28] no space left on device while writing {path}; {survived}"
    assert not list(path.parent.glob(TMP_PREFIX + "*"))
    if previous:
        loaded = torch.load(path, weights_only=True)
        assert loaded["step"] == 1 and torch.equal(loaded["w"], OLD["w"])


@pytest.mark.parametrize("previous", [True, False])
def test_enospc_inside_torch_save_is_a_disk_full_error(tmp_path, monkeypatch, previous):
    path = tmp_path / "last.ckpt"
    if previous:
        atomic_save(OLD, path)
    fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: FillsUp(fdopen(*a, **k), room=100_000))
    with pytest.raises(DiskFullError) as err:
        atomic_save(BIG, path)
    assert_reported(path, err, previous)


def test_other_torch_save_errors_are_not_called_disk_full(tmp_path):
    with pytest.raises(Exception) as err:
        atomic_save({"f": lambda: 0}, tmp_path / "x.ckpt")  # a lambda cannot be pickled
    assert not isinstance(err.value, DiskFullError)
    assert not list(tmp_path.iterdir())


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 1 MB tmpfs (needs root and mount rights; skipped otherwise)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_real_full_file_system(full_tmpfs):
    path = full_tmpfs / "last.ckpt"
    atomic_save(OLD, path)
    with pytest.raises(DiskFullError) as err:
        atomic_save(BIG, path)
    assert_reported(path, err, previous=True)
