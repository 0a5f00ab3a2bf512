"""Precomputed-feature modalities: per-example vectors [D] or sequences [T, D] stored in .npy / .npz files.

A manifest column holds a reference, relative to the manifest's folder (or absolute):

  `x.npy`          the whole array is one example ([D] or [T, D]): one file per example;
  `x.npy#<row>`    row <row> of the array in x.npy ([N, D] vectors or [N, T, D] equal-length sequences):
                   one array per split (or per manifest), the reference naming the row;
  `x.npz#<name>`   the array <name> of the archive: one archive per split, sequences of any length;
  `x.npz#<row>`    row <row> of the archive's only array.

All examples of a modality share one dimension D and are all vectors or all sequences; a reference to
a missing file or row, a wrong shape or a non-numeric array raises naming the file, the column and
(through TableData) the manifest line, or is skipped and counted with `data.on_error=skip`.
Non-finite values (NaN, inf) are masked, never trained on: a vector with any is a missing modality for
that example; a sequence loses those frames (and is missing when none is left). A per-dimension
mean/std fitted on the training split (all frames of its sequences) normalises every split and is stored
in the data state (the checkpoint). A batch holds `features` ([B, D], or [B, T, D] padded to the longest
sequence with a boolean `frame_mask` [B, T] that is True on real frames) and `mask` (present or not).
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

SUFFIXES = (".npy", ".npz")
REFERENCE_FORMS = "<file>.npy, <file>.npy#<row>, <file>.npz#<name> or <file>.npz#<row>"
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class FeatureReadError(ValueError):
    """A feature reference that cannot be used: missing file or row, wrong shape (data.on_error handles it)."""


def split_reference(value: str) -> tuple[str, str | None]:
    """(file, selector or None) of a reference `file[#selector]`; a file that is not .npy/.npz raises."""
    file, sep, selector = value.rpartition("#")
    if not sep or not selector:
        file, selector = value, None
    if Path(file).suffix.lower() not in SUFFIXES:
        raise FeatureReadError(f"{value!r} is not a feature reference; expected {REFERENCE_FORMS}")
    return file, selector


def is_reference(value: Any) -> bool:
    """Whether a manifest value looks like a feature reference (used to rebase copied manifests)."""
    if not isinstance(value, str):
        return False
    try:
        split_reference(value)
    except FeatureReadError:
        return False
    return True


class ArrayFiles:
    """The few most recently used .npy (memory-mapped) and .npz files, so that a split's rows referring to
    one array open it once."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.opened: OrderedDict[tuple[Path, str | None], Any] = OrderedDict()

    def get(self, path: Path, member: str | None = None) -> Any:
        """The array in a .npy, the archive of a .npz (`member=None`), or the archive's member `member`."""
        key = (path, member)
        if key in self.opened:
            self.opened.move_to_end(key)
            return self.opened[key]
        if member is not None:
            value = self.get(path)[member]
        else:
            value = _open_array(path)
        self.opened[key] = value
        while len(self.opened) > self.size:
            _, old = self.opened.popitem(last=False)
            if isinstance(old, np.lib.npyio.NpzFile):
                old.close()
        return value

    def clear(self) -> None:
        for value in self.opened.values():
            if isinstance(value, np.lib.npyio.NpzFile):
                value.close()
        self.opened.clear()


def _open_array(path: Path) -> Any:
    if not path.is_file():
        raise FeatureReadError(f"file not found: {path} (feature paths are relative to the manifest)")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FeatureReadError(f"{path}: not a readable {path.suffix} array file ({exc}); object arrays "
                               "(pickles) are refused: save plain numeric arrays") from None


NORMALIZE = (True, False, "group")  # data.features.<name>.normalize
MIN_GROUP_ROWS = 2  # normalize=group: each group's own mean/std needs at least this many examples


def moments(examples: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (float64) over every vector / frame of `examples`; a constant dimension gets
    std 1."""
    values = torch.cat([x.reshape(-1, dim) for x in examples]).double()
    std = values.std(dim=0, unbiased=False)
    return values.mean(dim=0), torch.where(std > 1e-6, std, torch.ones_like(std))


class FeatureModality:
    """One precomputed-feature modality named `name`, read from manifest column `column` (default: the name).

    `normalize`: scale each dimension by the training split's mean/std; `group` first standardises each
    example by the mean/std of its own group (`data.group_column`, e.g. the speaker) over the split being read
    (`standardised_by_group`: speaker normalisation, unlabelled, so an unseen speaker is normalised by its own
    clips), then as `true`; `false` leaves the values as they are. `state` is what `state_dict` gave (the
    checkpoint): the dimension, vectors or sequences, and the normaliser.
    """

    def __init__(self, name: str, column: str | None = None, normalize: bool | str = True,
                 state: Mapping[str, Any] | None = None) -> None:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"data.features.{name}: a feature modality's name must be a letter followed by "
                             "letters, digits or '_' (it names the encoder and its learning-rate part)")
        if normalize not in NORMALIZE:
            raise ValueError(f"data.features.{name}.normalize={normalize!r}: allowed are true (the training "
                             "split's mean/std), group (each group's own, then the training split's) and false")
        state = state or {}
        self.name, self.column = name, column or name
        self.normalize, self.by_group = normalize is not False, normalize == "group"
        self.dim: int | None = state.get("dim")
        self.sequence: bool | None = state.get("sequence")
        self.mean: torch.Tensor | None = state.get("mean")
        self.std: torch.Tensor | None = state.get("std")
        self.first: str | None = None  # the file that fixed dim/sequence (for messages)
        self.masked_examples = self.masked_frames = 0  # non-finite values turned into missing data
        self.files = ArrayFiles()

    # ---- one example ------------------------------------------------------------------------------
    def load(self, value: str, base: Path) -> torch.Tensor | None:
        """The float32 [D] or [T, D] example `value` refers to (relative to `base`); None when its values
        are non-finite (masked). Raises FeatureReadError naming the column and file."""
        try:
            file, selector = split_reference(value)
            path = base / Path(file).expanduser()
            array = self._select(path, selector)
            return self._check(array, f"{path}{'#' + selector if selector else ''}")
        except FeatureReadError as exc:
            raise FeatureReadError(f"column {self.column!r} (data.features.{self.name}): {exc}") from None

    def _select(self, path: Path, selector: str | None) -> np.ndarray:
        if path.suffix.lower() == ".npz":
            archive = self.files.get(path)
            if selector is None:
                raise FeatureReadError(f"{path}: a .npz reference names an array or a row: "
                                       f"{path.name}#<name> or {path.name}#<row>")
            if selector in archive.files:
                return self.files.get(path, selector)
            if len(archive.files) != 1 or not selector.isdigit():
                shown = archive.files[:5] + (["..."] if len(archive.files) > 5 else [])
                raise FeatureReadError(f"{path} has no array {selector!r} (arrays: {shown}); #<row> needs an "
                                       "archive with a single array")
            return self._row(self.files.get(path, archive.files[0]), selector, path)
        array = self.files.get(path)
        return array if selector is None else self._row(array, selector, path)

    @staticmethod
    def _row(array: np.ndarray, selector: str, path: Path) -> np.ndarray:
        if not selector.isdigit():
            raise FeatureReadError(f"{path}#{selector}: the row after '#' must be a whole number >= 0")
        row = int(selector)
        if array.ndim < 2:
            raise FeatureReadError(f"{path} holds one array of shape {tuple(array.shape)}, not rows: refer to "
                                   f"it as {path.name} (without #{selector})")
        if row >= array.shape[0]:
            raise FeatureReadError(f"row {row} is out of range: {path} holds {array.shape[0]} rows "
                                   f"(shape {tuple(array.shape)})")
        return array[row]

    def _check(self, array: np.ndarray, where: str) -> torch.Tensor | None:
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
            raise FeatureReadError(f"{where}: dtype {array.dtype} is not a real number type")
        if array.ndim not in (1, 2) or array.shape[-1] == 0:
            raise FeatureReadError(f"{where}: shape {tuple(array.shape)}; expected [D] (a vector) or [T, D] "
                                   "(a sequence of T frames) with D > 0")
        sequence, dim = array.ndim == 2, int(array.shape[-1])
        if self.dim is None:
            self.dim, self.sequence, self.first = dim, sequence, where
        elif (dim, sequence) != (self.dim, self.sequence):
            expected = f"[T, {self.dim}] sequences" if self.sequence else f"[{self.dim}] vectors"
            origin = f" (as {self.first})" if self.first else " (in the checkpoint)"
            raise FeatureReadError(f"{where}: shape {tuple(array.shape)}, but this modality holds "
                                   f"{expected}{origin}; every example needs the same kind and dimension")
        values = np.asarray(array, dtype=np.float32)
        finite = np.isfinite(values)
        if sequence:
            frames = finite.all(axis=1)
            if not frames.all():
                self.masked_frames += int((~frames).sum())
                values = values[frames]
            if not len(values):
                self.masked_examples += 1
                return None
        elif not finite.all():
            self.masked_examples += 1
            return None
        return torch.from_numpy(np.array(values))

    # ---- statistics, transform, batch -----------------------------------------------------------
    def standardised_by_group(self, examples: list[torch.Tensor | None], groups: list[str | None],
                              split: str) -> list[torch.Tensor | None]:
        """normalize=group: every example standardised by the per-dimension mean/std of its group's examples
        in this split (every frame of a sequence counts once; a constant dimension keeps std 1)."""
        if missing := sum(g is None for g, x in zip(groups, examples) if x is not None):
            raise ValueError(f"data.features.{self.name}.normalize=group: {missing} row(s) of {split} have no group; "
                             "set data.group_column (e.g. speaker) or data.group_regex, and give every row one")
        members: dict[str, list[int]] = {}
        for i, (group, example) in enumerate(zip(groups, examples)):
            if example is not None:
                members.setdefault(str(group), []).append(i)
        if lone := sorted(g for g, rows in members.items() if len(rows) < MIN_GROUP_ROWS):
            raise ValueError(f"data.features.{self.name}.normalize=group: group(s) {lone[:5]} of {split} have "
                             f"fewer than {MIN_GROUP_ROWS} usable rows, too few for their own mean/std; read "
                             "more rows of each group together, or use normalize=true")
        out = list(examples)
        for rows in members.values():
            mean, std = moments([examples[i] for i in rows], self.dim)
            for i in rows:
                out[i] = ((examples[i].double() - mean) / std).float()
        log.info("split %s: %s standardised per group (%d group(s))", split, self.name, len(members))
        return out

    def needs_fit(self) -> bool:
        return self.normalize and self.mean is None

    def fit(self, examples: list[torch.Tensor]) -> None:
        """Per-dimension mean and std of the training examples (every frame of a sequence counts once)."""
        if not self.needs_fit():
            return
        if not examples:
            raise ValueError(f"data.features.{self.name}: no training example of column {self.column!r} is "
                             "usable (all missing or non-finite); fix the features or drop it from data.modalities")
        mean, std = moments(examples, self.dim)
        self.mean, self.std = mean.float(), std.float()

    def __call__(self, example: torch.Tensor) -> torch.Tensor:
        """The example normalised (unchanged with normalize=false)."""
        return (example - self.mean) / self.std if self.normalize else example

    def pooled(self, example: torch.Tensor | None) -> torch.Tensor:
        """One loaded example as a [D] vector (a sequence's frames averaged), NaN when missing: the fixed
        representation the linear baseline reads (metrics/class_baselines.py)."""
        if example is None:
            return torch.full((self.dim,), float("nan"))
        return example.double().mean(dim=0).float() if self.sequence else example

    def collate(self, examples: list[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """`features` (zeros where missing; sequences padded at the end), `frame_mask` (sequences), `mask`."""
        present = torch.tensor([x is not None for x in examples])
        if not self.sequence:
            zeros = torch.zeros(self.dim)
            return {"features": torch.stack([zeros if x is None else x for x in examples]), "mask": present}
        longest = max([len(x) for x in examples if x is not None], default=1)
        features = torch.zeros(len(examples), longest, self.dim)
        frame_mask = torch.zeros(len(examples), longest, dtype=torch.bool)
        for i, x in enumerate(examples):
            if x is not None:
                features[i, : len(x)] = x
                frame_mask[i, : len(x)] = True
        return {"features": features, "frame_mask": frame_mask, "mask": present}

    def inputs(self) -> dict[str, str]:
        """Batch key suffix -> the encoder's argument (what fusion passes to `features()`)."""
        return {"features": "features", "frame_mask": "frame_mask"} if self.sequence else {"features": "features"}

    def model_kwargs(self) -> dict[str, Any]:
        return {"input_dim": self.dim, "sequence": bool(self.sequence)}

    def batch_keys(self) -> list[str]:
        return [f"{self.name}_{key}" for key in ("features", "frame_mask", "mask")]

    def describe(self) -> str:
        masked = [f"{n} {what}" for n, what in ((self.masked_examples, "example(s)"), (self.masked_frames, "frame(s)"))
                  if n]
        return f"; {self.name}: non-finite values masked in {' and '.join(masked)}" if masked else ""

    def state_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "sequence": self.sequence, "mean": self.mean, "std": self.std}


def feature_modalities(config: Mapping[str, Any] | None, state: Mapping[str, Any] | None) -> dict[str, FeatureModality]:
    """`data.features` (name -> {column, normalize: true | group | false} or null) as FeatureModality objects,
    restored from `state`."""
    out = {}
    for name, options in dict(config or {}).items():
        options = dict(options or {})
        unknown = set(options) - {"column", "normalize"}
        if unknown:
            raise ValueError(f"data.features.{name}: unknown key(s) {sorted(unknown)}; allowed: column, normalize")
        out[str(name)] = FeatureModality(str(name), **options, state=(state or {}).get(str(name)))
    return out


def rebase(value: str, source_dir: Path, target_dir: Path) -> str:
    """A relative path (or feature reference) written relative to `source_dir`, rewritten relative to
    `target_dir`, so that a copied manifest row still finds its files."""
    file, selector = split_reference(value) if is_reference(value) else (value, None)
    if Path(file).expanduser().is_absolute():
        return value
    moved = os.path.relpath((source_dir / file).resolve(), target_dir.resolve())
    return moved if selector is None else f"{moved}#{selector}"
