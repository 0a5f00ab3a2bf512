"""Row readers for JSONL, CSV and TSV files with errors that name the file, line and config key."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "json", "csv", "tsv")
ON_ERROR = ("raise", "skip")  # data.on_error
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "pipe": "|", "semicolon": ";", "space": " "}
JSON_EXPECTED = "expected JSONL (one JSON object per line) or a JSON list of objects"


def check_file(path: str | Path | None, key: str) -> Path:
    """The path as a Path; a missing file raises FileNotFoundError naming the path and key."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{key} is not set; set {key}=<path to the file>")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}: file not found: {path} (set {key}=<path> to an existing file)")
    return path


def decode_utf8(data: bytes, name: str) -> str:
    """`data` as UTF-8 text (a leading BOM dropped); a bad byte raises a ValueError naming `name`, its line
    and the fix."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raw = exc.object  # offsets are relative to it (after a BOM)
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        lineno = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{name}:{lineno}: byte 0x{raw[exc.start]:02x} (column "
                         f"{exc.start - line_start + 1}) is not UTF-8; re-save the file as UTF-8 (e.g. "
                         "`iconv -f latin1 -t utf-8 in > out`, or 'CSV UTF-8' in a spreadsheet)") from None


def read_text(path: Path) -> str:
    """The whole file as UTF-8 text; a non-UTF-8 byte names the file, line and fix."""
    return decode_utf8(path.read_bytes(), str(path))


class BadRow(ValueError):
    """A row that cannot be used (e.g. a blank text, a list where a text belongs): handled by `data.on_error`."""

    def __init__(self, message: str, fix: str = "fix the row") -> None:
        super().__init__(message)
        self.fix = fix


def read_rows(path: Path, fmt: str | None = None, has_header: bool = True, delimiter: str | None = None,
              bad_fields: Callable[[int, str], None] | None = None) -> Iterator[tuple[int, dict[Any, Any]]]:
    """Yield (line number, row) pairs. Without a header, CSV/TSV rows are keyed by column index.

    `delimiter` (one character, or tab/comma/pipe/semicolon/space) splits the columns of a delimited file
    whatever its suffix (`data.delimiter`); by default CSV uses "," and TSV a tab (tab-separated: no quoting,
    so quote characters are text, as in GLUE's TSV files). A row's line number is the line it starts on.
    Rows that would change meaning silently are not yielded but passed to `bad_fields(line, message)`
    (without it they raise a ValueError naming the file and line): broken CSV quoting, a quoted field that
    swallowed the rows after it (see `_swallowed`), the header repeated as a row; a delimited row whose
    number of fields differs from the header's is passed too (without `bad_fields` it is zipped as it is).
    A JSON list yields (item number, row)."""
    if delimiter is not None:
        delimiter = DELIMITER_NAMES.get(str(delimiter).lower(), str(delimiter))
        if len(delimiter) != 1:
            raise ValueError(f"data.delimiter={delimiter!r} must be one character (or tab, comma, pipe, semicolon, "
                             "space)")
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if delimiter is not None and fmt not in ("jsonl", "json"):
        fmt = "csv"  # any delimited text file
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown format {fmt!r}; allowed: {list(FORMATS)} (set data.format, or "
                         "data.delimiter for a delimited text file)")
    text = read_text(path)

    def bad(lineno: int, message: str) -> None:
        if bad_fields is None:
            raise ValueError(f"{path}:{lineno}: {message}; fix the row")
        bad_fields(lineno, message)

    if fmt in ("jsonl", "json"):
        for lineno, row in _json_rows(path, text):
            if len(row) > 1 and all(isinstance(v, str) and v == str(k) for k, v in row.items()):
                bad(lineno, HEADER_AGAIN)
            else:
                yield lineno, row
        return
    yield from _delimited_rows(path, text, delimiter or ("\t" if fmt == "tsv" else ","), has_header, bad,
                               bad_fields is not None)


HEADER_AGAIN = "the header repeated as a row (e.g. files concatenated with their headers); delete that line"


def _delimited_rows(path: Path, text: str, delimiter: str, has_header: bool, bad: Callable[[int, str], None],
                    count_fields: bool) -> Iterator[tuple[int, dict[Any, Any]]]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV convention: quotes are text
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=quoting != csv.QUOTE_NONE)
    header = None
    while True:
        lineno = reader.line_num + 1  # where this record starts (a quoted field may span lines)
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if header is None and has_header:
                raise ValueError(f"{path}:{lineno}: broken CSV quoting in the header ({exc}); fix the header") from None
            bad(lineno, f"broken CSV quoting ({exc}, line {reader.line_num}): a quote opened here is not closed, or "
                        'text follows a closing quote; close the quote, and double a quote inside a quoted field ("")')
            continue
        if has_header and header is None:
            header = values
            continue
        if not values:
            continue
        if header and count_fields and len(values) != len(header):
            bad(lineno, f"{len(values)} field(s) where the header has {len(header)} (a malformed row, e.g. "
                        "a text broken by a newline or holding the delimiter)")
            continue
        if header and len(header) > 1 and values == header:
            bad(lineno, HEADER_AGAIN)
            continue
        if quoting != csv.QUOTE_NONE and (swallowed := _swallowed(values, len(header or values), delimiter)):
            bad(lineno, f"the quoted field {swallowed[0] + 1} spans lines {lineno}-{reader.line_num} and holds the "
                        f"rest of its row and then a whole row ({swallowed[1]!r}): a quote that is not closed "
                        "merged rows; close the quote (or, if the line breaks belong to the text, save the table "
                        "as JSONL)")
            continue
        yield lineno, dict(zip(header, values)) if header else dict(enumerate(values))


def _swallowed(values: list[str], width: int, delimiter: str) -> tuple[int, str] | None:
    """(field index, the first swallowed row) when a field that spans lines looks like an unclosed quote's
    work: its first line completes the row (the delimiter-plus-newline pattern, `...,joy⏎`) and a later,
    whole line of it parses as a full row of `width` fields. Multi-line texts without that shape pass."""
    for i, value in enumerate(values):
        lines = value.replace("\r\n", "\n").split("\n")
        if len(lines) < 3:
            continue
        first = next(csv.reader([lines[0]], delimiter=delimiter))
        if len(first) != width - i or not all(v.strip() for v in first):
            continue
        for line in lines[1:-1]:
            if len(next(csv.reader([line], delimiter=delimiter), [])) == width:
                return i, line
    return None


def _json_rows(path: Path, text: str) -> Iterator[tuple[int, dict[Any, Any]]]:
    if text.lstrip()[:1] == "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); {JSON_EXPECTED}") from None
        for i, row in enumerate(items, start=1):
            if not isinstance(row, dict):
                raise ValueError(f"{path}: item {i} of the JSON list is a {type(row).__name__}, not an object; "
                                 f"{JSON_EXPECTED}")
            yield i, row
        return
    for lineno, line in enumerate(io.StringIO(text, newline=""), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(_whole_json_error(path, text) or
                             f"{path}:{lineno}: not valid JSON ({exc.msg}); {JSON_EXPECTED}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
        yield lineno, row


def _whole_json_error(path: Path, text: str) -> str | None:
    """When a file that is not JSONL is one valid JSON value (say, a pretty-printed object), say so."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict):
        keys = list(value)[:5]
        return (f"{path} holds a single JSON object (keys {keys}), not rows; {JSON_EXPECTED}, e.g. "
                '[{"text": ..., "label": ...}, ...] (convert it, or point the config at the right file)')
    return f"{path} holds a single JSON {type(value).__name__}, not rows; {JSON_EXPECTED}"


def read_lines(source: str, key: str = "input") -> list[str]:
    """Non-empty lines of a file, or of stdin for '-'; errors name the config key."""
    if source == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        text = decode_utf8(buffer.read(), "stdin") if buffer is not None else sys.stdin.read()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{key}: file not found: {path} (set {key}=<file> or {key}=- for stdin)")
        text = read_text(path)
    lines = [line.rstrip("\r") for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{key}: no non-empty line to predict in {'stdin' if source == '-' else source}")
    return lines


def column(row: dict[Any, Any], name: Any, where: str, key: str) -> Any:
    """row[name], or a ValueError naming the file and line (`where`), the missing column and config key."""
    if name not in row:
        raise ValueError(f"{where}: no column {name!r} (set by {key}); columns are {list(row)}")
    return row[name]


def text_value(value: Any, what: str = "the value") -> str | None:
    """`value` as text, or None when it is null, empty or only whitespace (never the text "None"). A JSON
    list or object raises BadRow naming `what` (a column and its config key): its str() ("['a', 'b']") would
    be a different text."""
    if value is None:
        return None
    if isinstance(value, list | dict):
        kind = "list" if isinstance(value, list) else "object"
        shown = json.dumps(value, ensure_ascii=False)
        raise BadRow(f"{what} holds a JSON {kind} ({shown[:60]}{'...' if len(shown) > 60 else ''}), not a text",
                     fix="make it one string in the file (join the parts), or choose another column")
    text = str(value)
    return text if text.strip() else None


def skip_or_raise(on_error: str, message: str, skipped: list[str], fix: str = "fix the row",
                  error: type[Exception] = ValueError) -> None:
    """A bad row: raise `error(message + fix)` under data.on_error=raise, or record `message` in `skipped`."""
    if on_error != "skip":
        raise error(f"{message}; {fix}, or set data.on_error=skip to skip and count such rows")
    skipped.append(message)


def log_skipped(what: str, skipped: Sequence[str], total: int, noun: str = "row(s)") -> None:
    """Warn how many of `total` rows were skipped (data.on_error=skip), with the first as an example."""
    if skipped:
        log.warning("%s: skipped %d of %d %s (data.on_error=skip), e.g. %s", what, len(skipped), total, noun,
                    skipped[0])
