"""Multimodal emotion data: manifests (CSV or JSONL) whose rows carry a label and any of text, audio, image.

A value missing from a row (null, empty, only whitespace, or no such column) is masked, not an error;
a row with no value at all, or without a label, raises naming its line (or is skipped and counted
with `on_error=skip`); a modality that no training row has is left out of the model altogether
(MELD here has text only). Each modality goes through the same pipeline as in its single-modality
task: the WordPiece (or pretrained) tokenizer, `AudioPipeline` with its train-split normaliser and
optional feature cache, and `ImagePipeline` with its train-split mean/std (and `min_image_size`).
Media paths are relative to the manifest.
A batch holds `<modality>_<input>` tensors plus a boolean `<modality>_mask` (present or not).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from . import tokenizers as toks
from .audio_features import AudioPipeline, AudioReadError, FeatureCache
from .classification import ClassificationData, Label
from .image_transforms import ImagePipeline, ImageReadError
from .readers import check_file, check_on_error, log_skipped, read_rows, skip_or_raise, text_value
from .splits import SPLITS
from .synthetic import demo_directory
from .synthetic_multimodal import make_multimodal_emotion

log = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "image")
MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


class Row(NamedTuple):
    """One manifest row: its label (None when unlabelled), a value per modality (None = missing), where."""

    label: Label | None
    values: dict[str, str | None]
    where: str
    base: Path  # media paths are relative to this directory


class MultimodalDataset(Dataset):
    """Per row: token ids, full-length log-mels and a uint8 image (each None when missing) and a class id."""

    def __init__(self, inputs: list[dict[str, Any]], labels: list[int | None], names: list[str],
                 audio: AudioPipeline, image: ImagePipeline, train: bool = False) -> None:
        self.inputs, self.labels, self.names = inputs, labels, names
        self.audio, self.image, self.train = audio, image, train

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = self.inputs[index]
        item: dict[str, Any] = {"text": raw.get("text")}
        if raw.get("audio") is not None:
            item["audio"] = self.audio.transform(raw["audio"], self.train)
        if raw.get("image") is not None:
            item["image"] = self.image(raw["image"], train=self.train)
        if self.labels[index] is not None:
            item["label"] = self.labels[index]
        return item


class MultimodalData(ClassificationData):
    """Reads per-split manifests (`files.train|val|test`) and builds the fusion model's inputs.

    `columns` maps each modality to its manifest column; `modalities` lists those to use. `text`,
    `audio` and `image` configure the per-modality pipelines (the keys of the text, audio and image
    data configs). Unreadable media raise an error naming the manifest line, or with
    `on_error=skip` drop the row and are counted. With `num_folds`, fold `fold` of the training
    manifest replaces the validation one.
    """

    def __init__(self, files: Mapping[str, str | None], label_column: str = "label",
                 columns: Mapping[str, str | None] | None = None, modalities: Sequence[str] = MODALITIES,
                 format: str | None = None, on_error: str = "raise", demo: bool = False, demo_dir: str | None = None,
                 text: Mapping[str, Any] | None = None, audio: Mapping[str, Any] | None = None,
                 image: Mapping[str, Any] | None = None, state: dict[str, Any] | None = None, **common: Any) -> None:
        super().__init__(state=state, **common)
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(f"data.modalities={list(modalities)} must be a non-empty subset of {list(MODALITIES)}")
        check_on_error(on_error)
        state = state or {}
        self.files, self.label_column, self.format = dict(files), label_column, format
        self.columns = {m: m for m in MODALITIES} | dict(columns or {})
        self.modalities = list(modalities)
        self.active: list[str] | None = state.get("modalities")
        self.on_error, self.demo, self.demo_dir = on_error, demo, demo_dir
        text, audio, image = dict(text or {}), dict(audio or {}), dict(image or {})
        self.tokenizer_name = text.get("tokenizer")
        self.vocab_size, self.max_length = int(text.get("vocab_size", 8000)), int(text.get("max_length", 128))
        self.tokenizer_cache_dir = text.get("tokenizer_cache_dir")
        self._tokenizer_json: str | None = state.get("tokenizer_json")
        self.tokenizer: Any = None
        self.audio = AudioPipeline(**dict(audio.get("features") or {}), **dict(audio.get("augment") or {}),
                                   normalizer=state.get("normalizer"))
        cache_dir = audio.get("cache_dir")
        self.cache = FeatureCache(cache_dir, self.audio) if audio.get("cache_features") and cache_dir else None
        self.image = ImagePipeline(int(image.get("channels", 1)), image.get("image_size", 48), image.get("augment"),
                                   state.get("image_mean", image.get("mean")), state.get("image_std", image.get("std")),
                                   bool(image.get("equalize", False)), int(image.get("min_image_size", 8)))
        self.image_normalize = image.get("normalize", "train")
        self.skipped: dict[str, int] = {}

    # ---- reading ------------------------------------------------------------------------
    def _read(self, path: Path, split: str, labelled: bool = True) -> list[Row]:
        rows: list[Row] = []
        bad: list[str] = []
        total = 0
        for lineno, raw in read_rows(path, self.format):
            total += 1
            where = f"{path}:{lineno}"
            values = {m: text_value(raw.get(self.columns.get(m) or "")) for m in MODALITIES}
            label = Label(raw.get(self.label_column), where) if labelled else None
            if label is not None and text_value(label.value) is None:
                skip_or_raise(self.on_error, f"{where}: no label in column {self.label_column!r} (null, empty or "
                              f"missing; data.label_column); columns are {list(raw)}", bad)
            elif all(v is None for v in values.values()):
                skip_or_raise(self.on_error, f"{where}: no modality present (columns {self.columns} are all null, "
                              "empty or missing)", bad, fix="fill at least one, or fix data.columns")
            else:
                rows.append(Row(label, values, where, path.parent))
        log_skipped(f"{path} (split {split})", bad, total)
        if bad:
            self.skipped[split] = self.skipped.get(split, 0) + len(bad)
        if not rows:
            raise ValueError(f"{path}: the manifest has no usable rows")
        used = [r for r in rows if any(r.values[m] is not None for m in self.modalities)]
        if len(used) < len(rows):
            log.info("%s: %d of %d rows have none of data.modalities=%s; left out", path, len(rows) - len(used),
                     len(rows), self.modalities)
        return used

    def _choose_modalities(self, train: list[Row]) -> None:
        """Keep the modalities that at least one training row has (unless fixed by a checkpoint)."""
        if self.active is not None:
            return
        self.active = [m for m in self.modalities if any(r.values[m] is not None for r in train)]
        for modality in self.modalities:
            if modality not in self.active:
                log.warning("modality %s: no training row has column %r; it is left out of the model", modality,
                            self.columns.get(modality))
            else:
                missing = sum(r.values[modality] is None for r in train)
                log.info("modality %s: present in %d of %d training rows", modality, len(train) - missing, len(train))

    def _media(self, rows: list[Row], split: str) -> tuple[list[Row], list[dict[str, Any]]]:
        """Decode audio (full-length log-mels) and images of the active modalities; bad files raise or skip."""
        kept, inputs, bad = [], [], []
        for row in rows:
            item: dict[str, Any] = {}
            try:
                for modality in ("audio", "image"):
                    value = row.values.get(modality)
                    if modality in self.active and value is not None:
                        path = (row.base / value).expanduser()
                        if modality == "audio":
                            item["audio"] = self.cache.get(path) if self.cache else self.audio.extract(path)
                        else:
                            item["image"] = self.image.load(path)
            except (AudioReadError, ImageReadError) as exc:
                skip_or_raise(self.on_error, f"{row.where}: {exc}", bad, fix="fix or remove the file")
                continue
            if "text" in self.active:
                item["text"] = row.values.get("text")
            kept.append(row)
            inputs.append(item)
        log_skipped(f"split {split}: unreadable media", bad, len(rows))
        if bad:
            self.skipped[split] = self.skipped.get(split, 0) + len(bad)
        return kept, inputs

    # ---- set-up -------------------------------------------------------------------------
    def setup(self, run_dir: str | Path | None = None, splits: Sequence[str] = SPLITS) -> None:
        """Read the manifests, fix classes and modalities, fit the pipelines on train, build the datasets."""
        if self.demo and splits:
            files = {f"data.files.{s}": p for s, p in self.files.items()}
            make_multimodal_emotion(demo_directory(self.demo_dir, files))
        need_train = "train" in splits or self.class_names is None or self.active is None or \
            (self.num_folds and "val" in splits)
        wanted = [s for s in SPLITS if (s in splits and self.files.get(s)) or (s == "train" and need_train)]
        if self.num_folds:
            wanted = [s for s in wanted if s != "val"]
        rows = {s: self._read(check_file(self.files.get(s), f"data.files.{s}"), s) for s in wanted}
        if "train" in rows:
            self.fix_classes([r.label for r in rows["train"]])
            self._choose_modalities(rows["train"])
        if not self.active:
            raise ValueError(f"data.modalities={self.modalities}: none of them has data in {self.files.get('train')}")
        media = {s: self._media(rows[s], s) for s in rows}
        ids = {s: self.label_ids([r.label for r in media[s][0]]) for s in media}
        if self.num_folds and "train" in media:
            (kept, inputs), train_ids = media["train"], ids["train"]
            train, held = self.take_fold(train_ids)
            for split, part in (("train", train), ("val", held)):
                media[split] = ([kept[i] for i in part], [inputs[i] for i in part])
                ids[split] = [train_ids[i] for i in part]
            log.info("fold %d of %d: %d training rows, %d held out for validation", self.fold, self.num_folds,
                     len(train), len(held))
        if "train" in media:
            self.count_classes(ids["train"])
            self._fit(media["train"][1])
        self._build_tokenizer([i.get("text") for i in media["train"][1]] if "train" in media else None, run_dir)
        for split in SPLITS:
            if split in splits and split in media:
                kept, inputs = media[split]
                self.datasets[split] = self._dataset(inputs, ids[split], [r.where for r in kept], split == "train")
        log.info("data: %s; %d classes %s; modalities %s", {s: len(d) for s, d in self.datasets.items()},
                 len(self.class_names), self.class_names, self.active)

    def _fit(self, train: list[dict[str, Any]]) -> None:
        """Audio normaliser and image mean/std from the training rows only (unless already known)."""
        if "audio" in self.active and not self.audio.normalizer.fitted:
            for item in train:
                if item.get("audio") is not None:
                    self.audio.normalizer.update(item["audio"])
            self.audio.normalizer.finish()
        if "image" in self.active:
            self.image.choose_normalization(self.image_normalize,
                                            lambda: [i["image"] for i in train if i.get("image") is not None])

    def _build_tokenizer(self, texts: list[str | None] | None, run_dir: str | Path | None) -> None:
        if "text" not in self.active:
            return
        present = [t for t in texts if t] if texts is not None else None
        self.tokenizer, self._tokenizer_json = toks.build(
            self._tokenizer_json, self.tokenizer_name,
            (lambda: toks.train_wordpiece_cached(present, self.tokenizer_cache_dir, vocab_size=self.vocab_size))
            if present is not None else None, run_dir)

    def _dataset(self, inputs: list[dict[str, Any]], labels: list[int | None], names: list[str],
                 train: bool = False) -> MultimodalDataset:
        if "text" in self.active:  # tokenized once; a missing text becomes the empty text, masked later
            texts = [i.get("text") or "" for i in inputs]
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
            for item, ids in zip(inputs, encoded):
                item["text"] = (ids, item.get("text") is not None)
        return MultimodalDataset(inputs, labels, names, self.audio, self.image, train)

    # ---- what the trainer, model and policy need ------------------------------------------
    def predict_dataset(self, source: str) -> MultimodalDataset:
        """Inputs for `predict`: a manifest file (.jsonl or .csv) with any of the modality columns."""
        if not self.files.get("train") and self.active is None:
            raise ValueError("data: the modalities are unknown; predict from a checkpoint")
        if source == "-" or Path(source).suffix.lower() not in MANIFEST_SUFFIXES:
            raise ValueError(f"input={source}: expected a manifest file (.jsonl or .csv) with any of the columns "
                             f"{[self.columns[m] for m in self.active]} (media paths relative to it)")
        self._build_tokenizer(None, None)
        rows = self._read(check_file(source, "input"), "predict", labelled=False)
        kept, inputs = self._media(rows, "predict")
        return self._dataset(inputs, [None] * len(kept), [r.where for r in kept])

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        if "text" in self.active:
            ids, mask = toks.pad_ids([ex["text"][0] for ex in examples], self.tokenizer.pad_token_id)
            batch.update(text_input_ids=ids, text_attention_mask=mask,
                         text_mask=torch.tensor([ex["text"][1] for ex in examples]))
        shapes = {"audio": (1, self.audio.n_mels, self.audio.num_frames),
                  "image": (self.image.channels, *self.image.size)}
        names = {"audio": "audio_features", "image": "image_pixels"}
        for modality in ("audio", "image"):
            if modality in self.active:
                batch[names[modality]] = torch.stack([ex.get(modality, torch.zeros(shapes[modality]))
                                                      for ex in examples])
                batch[f"{modality}_mask"] = torch.tensor([modality in ex for ex in examples])
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return batch

    def model_kwargs(self) -> dict[str, Any]:
        per_modality = {"audio": {"n_mels": self.audio.n_mels}, "image": {"in_channels": self.image.channels}}
        if "text" in self.active:
            per_modality["text"] = {"vocab_size": len(self.tokenizer), "pad_token_id": self.tokenizer.pad_token_id}
        return {**super().model_kwargs(), "modalities": list(self.active),
                "encoder_kwargs": {m: per_modality[m] for m in self.active}}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "modalities": list(self.active), "tokenizer_json": self._tokenizer_json,
                "normalizer": self.audio.normalizer.state_dict(), "image_mean": self.image.mean,
                "image_std": self.image.std}
