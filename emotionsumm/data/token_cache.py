"""Token ids kept as flat int32 arrays plus offsets, cached on disk by content and memory-mapped.

A tokenised split is a few `Ragged` arrays (`input_ids`, `labels`, `token_type_ids`): one flat int32 array of
every example's ids and an int64 array of offsets. `TokenCache.get` returns them memory-mapped from
`<directory>/<kind>-<key>.<name>.npy`, building and writing them (atomically) on a miss; the key hashes the
texts themselves, the tokenizer (its full serialisation and the library versions) and every encoding setting,
so an edited file, another tokenizer or another `max_length` is a miss. A manifest written last lists each
array's shape and CRC-32: an entry that does not match it (a crash, a damaged disk, an edit) is rebuilt,
never trusted. An example's ids are read back as the same list of ints the tokenizer gave.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what is stored (or how it is keyed) changes
CHUNK = 4096  # texts tokenised per call: the tokenizer's Python lists never hold more than this many


class Ragged:
    """Variable-length int sequences: `values[offsets[i]:offsets[i + 1]]` is sequence i (a list of ints)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values, self.offsets = values, offsets

    @classmethod
    def from_lists(cls, sequences: Iterable[Sequence[int]]) -> Ragged:
        sequences = list(sequences)
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in sequences], out=offsets[1:])
        flat = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(flat, offsets)

    @classmethod
    def concat(cls, parts: Sequence[Ragged]) -> Ragged:
        """One Ragged of the parts in order (chunked tokenisation)."""
        if not parts:
            return cls.from_lists([])
        starts = np.cumsum([0] + [len(p.values) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
        return cls(np.concatenate([p.values for p in parts]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> list[int]:
        return self.values[self.offsets[index]:self.offsets[index + 1]].tolist()

    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()


class LazyList(Sequence):
    """A read-only sequence of `n` items made by `item(i)` on access (examples built from memory-mapped ids)."""

    def __init__(self, n: int, item: Callable[[int], Any]) -> None:
        self._n, self._item = n, item

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(self._n))]
        if not -self._n <= index < self._n:
            raise IndexError(f"index {index} out of range for {self._n} examples")
        return self._item(index % self._n)

    def __iter__(self) -> Iterator[Any]:
        return (self._item(i) for i in range(self._n))


def tokenizer_identity(tokenizer: Any) -> str | None:
    """What decides a tokenizer's ids: its class, serialisation (without the truncation and padding state that
    each call sets) and library versions; None when it cannot be serialised (a slow tokenizer): not cached."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    import tokenizers
    import transformers

    spec = json.loads(backend.to_str())
    spec.pop("truncation", None), spec.pop("padding", None)  # set by each call (transformers), not the ids' maker
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    digest.update(json.dumps([type(tokenizer).__name__, tokenizers.__version__, transformers.__version__,
                              tokenizer.padding_side, tokenizer.truncation_side]).encode())
    return digest.hexdigest()


def content_key(settings: dict[str, Any], *texts: Sequence[str] | None) -> str:
    """A hash of `settings` and every text of each list (None and [] differ)."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, settings], sort_keys=True, default=str).encode())
    for part in texts:
        digest.update(b"\2" if part is None else b"\3%d\3" % len(part))
        for text in part or ():
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
    return digest.hexdigest()[:32]


def _crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


class TokenCache:
    """Ragged arrays under `directory` by kind and content key; `directory=None` keeps them in memory."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.hits = self.misses = 0

    def tokenized(self, kind: str, tokenizer: Any, settings: dict[str, Any], texts: Sequence[Sequence[str] | None],
                  build: Callable[[], tuple[dict[str, Ragged], dict[str, Any]]]
                  ) -> tuple[dict[str, Ragged], dict[str, Any]]:
        """`get` keyed by the tokenizer's identity, the encoding `settings` and the `texts` (each list, or None).
        Nothing is hashed without a directory; a tokenizer without an identity (a slow one) is not cached."""
        if self.directory is None:
            return build()
        identity = tokenizer_identity(tokenizer)
        key = content_key({"tokenizer": identity, **settings}, *texts) if identity else None
        return self.get(kind, key, build)

    def get(self, kind: str, key: str | None, build: Callable[[], tuple[dict[str, Ragged], dict[str, Any]]]
            ) -> tuple[dict[str, Ragged], dict[str, Any]]:
        """(arrays, meta): memory-mapped from the cache, else `build()` (then written and mapped)."""
        if self.directory is None or key is None:
            return build()
        stem = self.directory / f"{kind}-{key}"
        found = self._open(stem)
        if found is not None:
            self.hits += 1
            return found
        arrays, meta = build()
        self._write(stem, arrays, meta)
        self.misses += 1
        reopened = self._open(stem)
        return reopened if reopened is not None else (arrays, meta)

    def _open(self, stem: Path) -> tuple[dict[str, Ragged], dict[str, Any]] | None:
        manifest = stem.with_name(stem.name + ".json")
        if not manifest.is_file():
            return None
        try:
            entry = json.loads(manifest.read_text(encoding="utf-8"))
            arrays = {}
            for name, files in entry["arrays"].items():
                values, offsets = (self._array(stem, name, part, *files[part], dtype)
                                   for part, dtype in (("values", np.int32), ("offsets", np.int64)))
                if offsets[0] != 0 or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
                    raise ValueError(f"{stem}.{name}: offsets do not fit the values")
                arrays[name] = Ragged(values, offsets)
            return arrays, entry["meta"]
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged or stale: rebuilt, never trusted
            log.warning("token cache entry %s is damaged (%s); tokenising again", stem, exc)
            manifest.unlink(missing_ok=True)
            return None

    @staticmethod
    def _array(stem: Path, name: str, part: str, shape: list[int], crc: int, dtype: type) -> np.ndarray:
        """One stored array, memory-mapped, after its checksum, shape and dtype match the manifest."""
        path = stem.with_name(f"{stem.name}.{name}.{part}.npy")
        if _crc(path) != crc:
            raise ValueError(f"{path}: checksum mismatch")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if list(array.shape) != shape or array.dtype != dtype or array.ndim != 1:
            raise ValueError(f"{path}: shape or dtype mismatch")
        return array

    def _write(self, stem: Path, arrays: dict[str, Ragged], meta: dict[str, Any]) -> None:
        from ..runs.atomic import atomic_open, write_json

        entry: dict[str, Any] = {"arrays": {}, "meta": meta}
        for name, ragged in arrays.items():
            entry["arrays"][name] = {}
            for part, array in (("values", ragged.values.astype(np.int32, copy=False)),
                                ("offsets", ragged.offsets.astype(np.int64, copy=False))):
                path = stem.with_name(f"{stem.name}.{name}.{part}.npy")
                with atomic_open(path, "wb") as fh:
                    np.save(fh, array, allow_pickle=False)
                entry["arrays"][name][part] = [list(array.shape), _crc(path)]
        write_json(entry, stem.with_name(stem.name + ".json"))  # last: it makes the entry valid
