"""Row readers for JSONL, CSV and TSV files with errors that name the file, line and config key."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "json", "csv", "tsv")


def check_file(path: str | Path | None, key: str) -> Path:
    """The path as a Path; a missing file raises FileNotFoundError naming the path and key."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{key} is not set; set {key}=<path to the file>")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}: file not found: {path} (set {key}=<path> to an existing file)")
    return path


def read_rows(path: Path, fmt: str | None = None, has_header: bool = True) -> Iterator[tuple[int, dict[Any, Any]]]:
    """Yield (line number, row) pairs. Without a header, CSV/TSV rows are keyed by column index."""
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown format {fmt!r}; allowed: {list(FORMATS)} (set data.format)")
    if fmt in ("jsonl", "json") and path.read_text(encoding="utf-8")[:1] == "[":
        for i, row in enumerate(json.loads(path.read_text(encoding="utf-8")), start=1):
            yield i, row
        return
    with path.open(encoding="utf-8", newline="") as fh:
        if fmt in ("jsonl", "json"):
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
                yield lineno, row
            return
        delimiter = "\t" if fmt == "tsv" else ","
        quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        header = next(reader, None) if has_header else None
        offset = 2 if has_header else 1
        for lineno, values in enumerate(reader, start=offset):
            if not values:
                continue
            yield lineno, dict(zip(header, values)) if header else dict(enumerate(values))


def read_lines(source: str, key: str = "input") -> list[str]:
    """Non-empty lines of a file, or of stdin for '-'; errors name the config key."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{key}: file not found: {path} (set {key}=<file> or {key}=- for stdin)")
        text = path.read_text(encoding="utf-8")
    lines = [line.rstrip("\r") for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{key}: no non-empty line to predict in {'stdin' if source == '-' else source}")
    return lines


def field(row: dict[Any, Any], name: Any, path: Path, lineno: int, key: str) -> Any:
    """row[name], or a ValueError naming the file, line, missing column and config key."""
    if name not in row:
        raise ValueError(f"{path}:{lineno}: no column {name!r} (set by {key}); columns are {list(row)}")
    return row[name]
