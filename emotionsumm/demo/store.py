"""Where demo sets live: the `data.demo_dir` guard and one-time, atomic generation into it.

Files are written atomically into a cache dir (`data.demo_dir`) and then read by the same readers as
real data. Demo data is only ever written into, and read from, that directory: `demo_directory`
refuses a configuration whose files point elsewhere, so a user's folder never gets demo files and
demo data is never scored as the user's split.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..runs.atomic import TMP_PREFIX, atomic_write_text, current_umask

MARKER = ".complete"  # written last into a generated directory: its presence means the set is complete


def demo_directory(demo_dir: str | Path | None, paths: Mapping[str, Any]) -> Path:
    """The directory `data.demo=true` generates into, once every configured path (config key -> path,
    None = unset) is checked to lie inside it; a path elsewhere raises a ValueError naming its key."""
    if not demo_dir:
        demo_dir = _existing_demo_set(paths)  # a checkpoint saved before data.demo_dir existed
    if not demo_dir:
        raise ValueError("data.demo=true needs data.demo_dir=<dir> (the cache dir the demo set is generated "
                         "into, e.g. ${paths.cache_dir}/demo/<name>); set data.demo=false to use your own files")
    root = Path(str(demo_dir)).expanduser().resolve()
    outside = [f"{key}={value}" for key, value in paths.items()
               if value not in (None, "") and not Path(str(value)).expanduser().resolve().is_relative_to(root)]
    if outside:
        raise ValueError(f"data.demo=true writes and reads demo data only inside data.demo_dir={root}; "
                         f"{', '.join(outside)} {'points' if len(outside) == 1 else 'point'} elsewhere: set "
                         "data.demo=false to use your own files")
    return root


def _existing_demo_set(paths: Mapping[str, Any]) -> Path | None:
    """The complete demo set (with its marker) that the first configured path lies in, if there is one."""
    first = next((Path(str(v)).expanduser() for v in paths.values() if v not in (None, "")), None)
    if first is None:
        return None
    directory = first if first.is_dir() else first.parent
    return directory if (directory / MARKER).is_file() else None


def write_directory_once(directory: str | Path, fill: Callable[[Path], None], description: str) -> Path:
    """Generate a demo set into `directory` unless it is complete already; return the directory.

    `fill(tmp)` writes into a temporary sibling that is then renamed into place, so concurrent
    first uses (or a crash) never leave a half-written set.
    """
    directory = Path(directory)
    if (directory / MARKER).is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{directory.name}.", dir=directory.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; the demo set is ordinary data
    try:
        fill(tmp)
        (tmp / MARKER).write_text(description + "\n")
        try:
            os.rename(tmp, directory)
        except OSError:  # another process finished first (or the dir exists): keep theirs
            if not (directory / MARKER).is_file():
                raise FileExistsError(f"{directory} exists but is not a complete demo set (no {MARKER}); "
                                      "delete it to regenerate it") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def write_jsonl_splits(directory: str | Path, sizes: dict[str, int], seed: int,
                       make_row: Callable[[random.Random, str, int], dict], shuffle: bool = False) -> Path:
    """Write `<split>.jsonl` with `size` rows `make_row(rng, split, i)` for each split that is not there yet
    (in random order with `shuffle`). Each split has its own seeded RNG, so a missing split is regenerated
    identically."""
    directory = Path(directory)
    for offset, (split, size) in enumerate(sizes.items()):
        path = directory / f"{split}.jsonl"
        if path.is_file():
            continue
        rng = random.Random(seed * 1000 + offset)
        rows = [json.dumps(make_row(rng, split, i)) for i in range(size)]
        if shuffle:
            rng.shuffle(rows)
        atomic_write_text("\n".join(rows) + "\n", path)
    return directory
