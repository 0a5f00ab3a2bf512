"""What set-up learns about image files, cached by content so a second run does not decode them again.

Without preload, set-up only needs to know that each image is readable and big enough (its verdict), and,
with `normalize=train`, the training images' mean/std. Both are kept in one JSON file per data source and
check settings under the data's `cache_dir`:

- a verdict per file, stored under its resolved path with its size and mtime_ns: a file whose size or
  mtime changed (or a new file) is checked again, alone; the other files keep their verdict. A bad
  verdict keeps its reason, so a corrupt file is refused (or skipped) by name without being opened;
- the statistics, keyed by a hash of the training files (resolved path, size, mtime_ns, in order).

Everything that changes a verdict or the statistics (channels, image size, min_image_size, equalize, PIL's
version, CHECK_VERSION) is part of the file's name. Writes are atomic; a stale, unreadable or malformed
cache file is rebuilt, never trusted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .cache_keys import Ident, file_ident, settings_key

log = logging.getLogger(__name__)

CHECK_VERSION = 1  # bump when what a check refuses changes, so old verdicts are not reused
MAX_STATS = 8  # training sets whose statistics one cache file keeps (folds, seeds)



class ImageCheckCache:
    """Verdicts (None = readable, else the reason it is not) and training statistics of image files.

    `verdict(path, check)` returns the cached verdict of an unchanged file, else runs `check(path)` (which
    returns None or raises with a `reason` attribute) and records it; `save()` writes the file if anything
    was learnt. `hits`/`misses` count verdicts read and checks run.
    """

    def __init__(self, directory: str | Path, sources: Sequence[str], settings: dict[str, Any]) -> None:
        from PIL import __version__ as pil_version

        self.settings = {**settings, "version": CHECK_VERSION, "pil": pil_version}
        name = settings_key({"sources": sorted(sources), "settings": self.settings})
        self.path = Path(directory).expanduser() / f"images-{name}.json"
        self.files: dict[str, list[Any]] = {}
        self.stats: dict[str, list[Any]] = {}
        self.idents: dict[Path, Ident] = {}
        self.folders: dict[str, str] = {}
        self.hits = self.misses = 0
        self.changed = False
        self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("settings") != self.settings:
                raise ValueError("other settings")
            files, stats = data["files"], data["stats"]
            if not all(isinstance(k, str) and isinstance(v, list) and len(v) == 3 and isinstance(v[0], int)
                       and isinstance(v[1], int) and (v[2] is None or isinstance(v[2], str))
                       for k, v in files.items()):
                raise ValueError("malformed file entry")
            channels = self.settings.get("channels")
            if not all(isinstance(v, list) and len(v) == 2 and all(isinstance(s, list) and len(s) == channels
                       and all(isinstance(x, int | float) and x >= 0 for x in s) for s in v) and min(v[1]) > 0
                       for v in stats.values()):
                raise ValueError("malformed statistics")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("data: image check cache %s is unreadable (%s): rebuilding it", self.path, exc)
            self.changed = True
            return
        self.files, self.stats = files, stats

    def ident(self, path: Path) -> Ident:
        if path not in self.idents:
            self.idents[path] = file_ident(path, self.folders)
        return self.idents[path]

    def verdict(self, path: Path, check: Callable[[Path], None]) -> str | None:
        """None if `path` is a usable image, else the reason why not (cached, or found by `check`)."""
        try:
            real, size, mtime = self.ident(path)
        except OSError:
            check(path)  # a missing or unreadable file: let the check say so, never cache it
            return None
        entry = self.files.get(real)
        if entry is not None and entry[0] == size and entry[1] == mtime:
            self.hits += 1
            return entry[2]
        self.misses += 1
        try:
            check(path)
            reason = None
        except ValueError as exc:
            reason = getattr(exc, "reason", None)
            if reason is None:
                raise
        self.files[real] = [size, mtime, reason]
        self.changed = True
        return reason

    def statistics(self, paths: Iterable[Path], compute: Callable[[], tuple[list[float], list[float]]]
                   ) -> tuple[list[float], list[float]]:
        """(mean, std) of the images at `paths`, cached under a hash of their idents, else `compute()`d."""
        key = settings_key([self.ident(Path(p)) for p in paths])
        if key in self.stats:
            mean, std = self.stats[key]
            return [float(m) for m in mean], [float(s) for s in std]
        mean, std = compute()
        self.stats = {**{k: v for k, v in list(self.stats.items())[-(MAX_STATS - 1):]}, key: [mean, std]}
        self.changed = True
        return mean, std

    def save(self) -> None:
        """Write what was learnt (atomically); a failed write only costs the next run a re-check."""
        if not self.changed:
            return
        from ..runs.atomic import atomic_write_text

        data = {"settings": self.settings, "files": self.files, "stats": self.stats}
        try:
            atomic_write_text(json.dumps(data) + "\n", self.path)
        except OSError as exc:
            log.warning("data: cannot write the image check cache %s (%s); the next run checks the images again",
                        self.path, exc)
            return
        self.changed = False
