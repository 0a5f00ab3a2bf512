"""The names of cache entries: a short hash of the settings (and, for files, the identities: resolved path, size,
mtime_ns) they depend on. The audio feature cache and the image check cache key by both."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from stat import S_ISLNK
from typing import Any

Ident = tuple[str, int, int]  # resolved path, size, mtime_ns


def settings_key(value: Any, length: int = 20) -> str:
    """A `length`-character hash of a JSON-able value (dict keys sorted, so their order does not matter)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def file_ident(path: Path, folders: dict[str, str] | None = None) -> Ident:
    """What identifies a file's content cheaply: its resolved path, size and mtime_ns. One lstat for a plain
    file whose folder was resolved before (`folders` memoises resolved folders); a symlink is followed."""
    stat = os.lstat(path)
    if S_ISLNK(stat.st_mode) or folders is None:
        stat = os.stat(path)
        return os.path.realpath(path), stat.st_size, stat.st_mtime_ns
    folder, name = os.path.split(os.path.abspath(path))
    if folder not in folders:
        folders[folder] = os.path.realpath(folder)
    return os.path.join(folders[folder], name), stat.st_size, stat.st_mtime_ns
