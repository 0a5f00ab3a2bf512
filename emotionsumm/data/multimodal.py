"""Multimodal emotion data: manifests (CSV, TSV or JSONL) whose rows carry a label and any of text, audio, image
and precomputed features.

Rows go through the shared table (`TableData`): one manifest per split (`split=files`) or one manifest
`file` split randomly, by a split column or by group; k-fold; `on_error`. A value missing from a row
(null, empty, only whitespace, or no such column) is masked, not an error; a row with no value at all,
or without a label, raises naming its line (or is skipped and counted with `on_error=skip`); a modality
that no training row has is left out of the model altogether (MELD here has text only). Each modality
goes through the same pipeline as in its single-modality task: the WordPiece (or pretrained) tokenizer,
`AudioPipeline` with its train-split normaliser and optional feature cache, and `ImagePipeline` with its
train-split mean/std (and `min_image_size`). Media paths are relative to the manifest.
Any number of precomputed-feature modalities (`features`: name -> {column, normalize}; vectors or
sequences in .npy/.npz files, see `features.py`) join them, each named by the user; non-finite
feature values are masked, and a row left with no usable value is left out (logged).
A batch holds `<modality>_<input>` tensors plus a boolean `<modality>_mask` (present or not).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.core import require_choice
from . import tokenizers as toks
from .audio_features import AudioPipeline, AudioReadError, FeatureCache, clip_statistics
from .features import FeatureModality, FeatureReadError, feature_modalities, is_reference, rebase
from .image_transforms import ImagePipeline, ImageReadError, thumbnail
from .readers import check_file, read_rows, text_value
from .table import BadRow, Examples, Row, TableData, TableDataset, picked

log = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "image")
MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
DEMO_SETS = ("multimodal", "features")  # data.demo_set: what data.demo=true generates
# a media modality's inputs in a batch: `<modality>_<key>` (the fusion model's INPUTS maps them to encoder arguments)
AS_READ = "{}:as_read"  # normalize=group: an example's pooled vector before its group's standardisation
MEDIA_KEYS = {"text": ("input_ids", "attention_mask"), "audio": ("features",), "image": ("pixels",)}


class MultimodalDataset(TableDataset):
    """Per row: token ids, full-length log-mels, a uint8 image and feature arrays (each absent when missing)
    and a class id; `texts` are the texts themselves (None where missing, or without a text modality)."""

    def __init__(self, inputs: list[dict[str, Any]], labels: list[int | None], names: list[str],
                 audio: AudioPipeline, image: ImagePipeline, features: Mapping[str, FeatureModality],
                 train: bool = False, texts: list[str | None] | None = None) -> None:
        super().__init__(inputs, labels, names, train=train)
        self.audio, self.image, self.features, self.texts = audio, image, features, texts

    def transform(self, raw: dict[str, Any], train: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"text": raw.get("text")}
        if raw.get("audio") is not None:
            item["audio"] = self.audio.transform(raw["audio"], train)
        if raw.get("image") is not None:
            item["image"] = self.image(raw["image"], train=train)
        for name, modality in self.features.items():
            if raw.get(name) is not None:
                item[name] = modality(raw[name])
        return item


class MultimodalData(TableData):
    """Reads manifests and builds the fusion model's inputs.

    `columns` maps text, audio and image to their manifest columns; `features` names the feature
    modalities (name -> {column: <manifest column, default the name>, normalize: true}); `modalities`
    lists those to use. `text`, `audio` and `image` configure the per-modality pipelines (the keys of
    the text, audio and image data configs). Unreadable media or feature files raise an error naming the
    manifest line, or with `on_error=skip` drop the row and are counted. `demo_set` chooses what
    `demo=true` generates. Sources, splits and k-fold: see TableData.
    """

    load_errors = (AudioReadError, ImageReadError, FeatureReadError)

    def __init__(self, files: Mapping[str, str | None] | None = None, file: str | None = None,
                 label_column: str = "label", columns: Mapping[str, str | None] | None = None,
                 modalities: Sequence[str] = MODALITIES, text: Mapping[str, Any] | None = None,
                 audio: Mapping[str, Any] | None = None, image: Mapping[str, Any] | None = None,
                 features: Mapping[str, Any] | None = None, demo_set: str = "multimodal",
                 state: dict[str, Any] | None = None, **common: Any) -> None:
        require_choice("data.demo_set", demo_set, DEMO_SETS)
        self.features = feature_modalities(features, (state or {}).get("features"))
        known = [*MODALITIES, *self.features]
        if clash := [m for m in self.features if m in MODALITIES]:
            raise ValueError(f"data.features.{clash[0]}: {clash[0]} is a media modality; name the features "
                             "otherwise (e.g. text_emb)")
        unknown = [m for m in modalities if m not in known]
        if unknown or not modalities:
            raise ValueError(f"data.modalities={list(modalities)} must be a non-empty subset of {known} "
                             "(text, audio, image and the names under data.features)")
        keys = [*(f"{m}_{k}" for m in MODALITIES for k in [*MEDIA_KEYS[m], "mask"]),
                *(k for f in self.features.values() for k in f.batch_keys())]
        if clash := sorted({k for k in keys if keys.count(k) > 1}):
            raise ValueError(f"data.features: the names give the same batch key {clash[0]!r} to two modalities; "
                             "rename one")
        super().__init__(files=dict(files or {}), label_column=label_column, state=state, **common)
        state = state or {}
        self.file, self.demo_set = file, demo_set
        self.columns = ({m: m for m in MODALITIES} | dict(columns or {})
                        | {name: f.column for name, f in self.features.items()})
        self.modalities = list(modalities)
        self.active: list[str] | None = state.get("modalities")
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
                                   bool(image.get("equalize", False)), int(image.get("min_image_size", 8)),
                                   image.get("processor"))
        self.image_normalize = image.get("normalize", "train")

    # ---- rows ---------------------------------------------------------------------------------
    def make_demo(self, directory: Path) -> None:
        if self.demo_set == "features":
            from ..demo.features import make_feature_demo

            make_feature_demo(directory)
            return
        from ..demo.multimodal import make_multimodal_emotion

        make_multimodal_emotion(directory)

    def parse(self, record: dict[Any, Any], where: str, path: Path) -> tuple[dict[str, str | None], Path]:
        """(a value per modality, None = missing; the manifest's folder, which media paths are relative to)."""
        values = {m: text_value(record.get(column or ""), f"column {column!r} (modality {m})")
                  for m, column in self.columns.items()}
        if all(v is None for v in values.values()):
            raise BadRow(f"no modality present (columns {self.columns} are all null, empty or missing)",
                         fix="fill at least one, or fix data.columns")
        return values, path.parent

    def read_table(self, path: Path, key: str, split: str | None, labelled: bool = True) -> list[Row]:
        """The manifest's rows that have at least one of `modalities`."""
        rows = super().read_table(path, key, split, labelled)
        used = [r for r in rows if any(r.item[0][m] is not None for m in self.modalities)]
        if len(used) < len(rows):
            log.info("%s: %d of %d rows have none of data.modalities=%s; left out", path, len(rows) - len(used),
                     len(rows), self.modalities)
        return used

    def fit_rows(self, train: list[Row]) -> None:
        """Keep the modalities that at least one training row has (unless fixed by a checkpoint)."""
        if self.active is not None:
            return
        self.active = [m for m in self.modalities if any(r.item[0][m] is not None for r in train)]
        if not self.active:
            raise ValueError(f"data.modalities={self.modalities}: none of them has data in the training split")
        for modality in self.modalities:
            missing = sum(r.item[0][modality] is None for r in train)
            if modality not in self.active:
                log.warning("modality %s: no training row has column %r; it is left out of the model", modality,
                            self.columns.get(modality))
            else:
                log.info("modality %s: present in %d of %d training rows", modality, len(train) - missing, len(train))

    # ---- one example --------------------------------------------------------------------------
    def load(self, item: tuple[dict[str, str | None], Path]) -> dict[str, Any]:
        """Full-length log-mels, the uint8 image and the feature arrays of the active modalities (and the text);
        features with non-finite values are left out (masked)."""
        values, base = item
        loaded: dict[str, Any] = {}
        for name, modality in self.features.items():
            if name in self.active and values.get(name) is not None:
                array = modality.load(values[name], base)
                if array is not None:
                    loaded[name] = array
        for modality in ("audio", "image"):
            value = values.get(modality)
            if modality in self.active and value is not None:
                path = (base / value).expanduser()
                if modality == "audio":
                    loaded["audio"] = self.cache.get(path) if self.cache else self.audio.extract(path)
                else:
                    loaded["image"] = self.image.load(path)
        if "text" in self.active:
            loaded["text"] = values.get("text")
        return loaded

    def apply(self, examples: Examples, split: str, fn: Any) -> None:
        """Load as TableData does, then leave out the rows left with no usable value of the active modalities
        (their only values were non-finite features), like rows that have none of data.modalities, and
        standardise the features of `normalize: group` modalities by their group's statistics."""
        super().apply(examples, split, fn)
        for features in self.features.values():
            features.files.clear()  # nothing open stays behind (datasets go to loader workers)
        keep = [i for i, item in enumerate(examples.inputs) if any(item.get(m) is not None for m in self.active)]
        if len(keep) < len(examples.inputs):
            log.info("split %s: %d row(s) left out: no usable value of the modalities %s (non-finite features "
                     "are masked)", split, len(examples.inputs) - len(keep), self.active)
            examples.rows = [examples.rows[i] for i in keep]
            examples.inputs = [examples.inputs[i] for i in keep]
            examples.ids = [examples.ids[i] for i in keep]
        groups = [r.group for r in examples.rows]
        for name, features in self.features.items():
            if name in self.active and features.by_group:
                normalised = features.standardised_by_group([i.get(name) for i in examples.inputs], groups, split)
                for item, value in zip(examples.inputs, normalised):
                    if value is not None:  # the baseline keeps its fixed representation: the vector as read
                        item[AS_READ.format(name)], item[name] = features.pooled(item[name]), value

    def needs_fit(self) -> bool:
        active = self.active or []
        return (self.active is None or ("audio" in active and not self.audio.normalizer.fitted)
                or ("image" in active and self.image_normalize == "train" and self.image.mean is None)
                or ("text" in active and self._tokenizer_json is None and not self.tokenizer_name)
                or any(f.needs_fit() or f.dim is None for n, f in self.features.items() if n in active))

    def fit(self, train: Examples | None, run_dir: str | Path | None) -> None:
        """Audio normaliser, image mean/std, feature normalisers and tokenizer from the training rows only
        (unless already known)."""
        if not self.active:
            raise ValueError(f"data.modalities={self.modalities}: the modalities are unknown; read the training "
                             "split or predict from a checkpoint")
        if train is not None and "audio" in self.active and not self.audio.normalizer.fitted:
            for item in train.inputs:
                if item.get("audio") is not None:
                    self.audio.normalizer.update(item["audio"])
            self.audio.normalizer.finish()
        if "image" in self.active:
            self.image.choose_normalization(self.image_normalize, (lambda: [
                i["image"] for i in train.inputs if i.get("image") is not None]) if train is not None else None)
        for name, modality in self.features.items():
            if name in self.active:
                modality.fit([i[name] for i in train.inputs if i.get(name) is not None] if train is not None else [])
        self._build_tokenizer([i.get("text") for i in train.inputs] if train is not None else None, run_dir)

    def _build_tokenizer(self, texts: list[str | None] | None, run_dir: str | Path | None) -> None:
        if "text" not in self.active:
            return
        present = [t for t in texts if t] if texts is not None else None
        self.tokenizer, self._tokenizer_json = toks.build(
            self._tokenizer_json, self.tokenizer_name,
            (lambda: toks.train_wordpiece_cached(present, self.tokenizer_cache_dir, vocab_size=self.vocab_size))
            if present is not None else None, run_dir)

    def make_dataset(self, split: str, examples: Examples) -> MultimodalDataset:
        return self._dataset(examples.inputs, examples.ids, [r.where for r in examples.rows], split == "train")

    def _dataset(self, inputs: list[dict[str, Any]], labels: list[int | None], names: list[str],
                 train: bool = False) -> MultimodalDataset:
        texts = None
        if "text" in self.active:  # tokenized once; a missing text becomes the empty text, masked later
            texts = [i.get("text") for i in inputs]
            encoded = self.tokenizer([t or "" for t in texts], truncation=True, max_length=self.max_length)["input_ids"]
            for item, ids in zip(inputs, encoded):
                item["text"] = (ids, item.get("text") is not None)
        features = {n: f for n, f in self.features.items() if n in self.active}
        return MultimodalDataset(inputs, labels, names, self.audio, self.image, features, train, texts)

    def baseline_views(self, split: str, rows: Sequence[int] | None = None
                       ) -> dict[str, Sequence[str | None] | np.ndarray]:
        """Per active modality: the texts, the clips' log-mel statistics, the images at 16 x 16 pixels and the
        feature vectors (sequences averaged), each NaN where a row lacks it (a missing text: None). A fixed
        representation whatever the model reads: `normalize: group` features as read, before their group's."""
        dataset = self.datasets[split]
        views: dict[str, Any] = {"text": picked(dataset.texts, rows)} if "text" in self.active else {}
        numeric = {"audio": lambda x: clip_statistics(self.audio, x), "image": thumbnail,
                   **{n: f.pooled for n, f in self.features.items() if n in self.active}}
        inputs = picked(dataset.inputs, rows)
        for name, represent in numeric.items():
            if name in self.active:
                key = name
                if name in self.features and self.features[name].by_group:
                    # `apply` kept the vector as read (already pooled) before standardising it by its group
                    key, represent = AS_READ.format(name), lambda vector: vector
                vectors = [represent(item[key]) if item.get(key) is not None else None for item in inputs]
                some = next((v for v in vectors if v is not None), None)
                if some is None:  # no row of this split has it; a training row does (else it is not active)
                    some = represent(next(i[key] for i in self.datasets["train"].inputs if i.get(key) is not None))
                views[name] = np.stack([np.full(len(some), np.nan, dtype=np.float32) if v is None else v.numpy()
                                        for v in vectors])
        return views

    def describe(self) -> str:
        return f"; modalities {self.active}" + "".join(f.describe() for n, f in self.features.items()
                                                        if n in self.active)

    # ---- what the trainer, model and policy need ------------------------------------------
    def predict_dataset(self, source: str) -> MultimodalDataset:
        """Inputs for `predict`: a manifest file (.jsonl or .csv) with any of the modality columns."""
        if not self.active:
            raise ValueError("data: the modalities are unknown; predict from a checkpoint")
        if source == "-" or Path(source).suffix.lower() not in MANIFEST_SUFFIXES:
            raise ValueError(f"input={source}: expected a manifest file (.jsonl or .csv) with any of the columns "
                             f"{[self.columns[m] for m in self.active]} (media paths relative to it)")
        self._build_tokenizer(None, None)
        rows = self.read_table(check_file(source, "input"), "input", "predict", labelled=False)
        examples = Examples(rows, [r.item for r in rows], [None] * len(rows))
        self.apply(examples, "predict", self.load)
        return self._dataset(examples.inputs, [None] * len(examples.rows), [r.where for r in examples.rows])

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
        for name, features in self.features.items():
            if name in self.active:
                batch.update({f"{name}_{k}": v for k, v in features.collate([ex.get(name) for ex in examples]).items()})
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return batch

    def model_kwargs(self) -> dict[str, Any]:
        per_modality = {"audio": {"n_mels": self.audio.n_mels}, "image": {"in_channels": self.image.channels},
                        **{name: f.model_kwargs() for name, f in self.features.items()}}
        if "text" in self.active:
            per_modality["text"] = {"vocab_size": len(self.tokenizer), "pad_token_id": self.tokenizer.pad_token_id}
        return {**super().model_kwargs(), "modalities": list(self.active),
                "encoder_kwargs": {m: per_modality[m] for m in self.active},
                "inputs": {name: f.inputs() for name, f in self.features.items() if name in self.active}}

    def path_columns(self) -> list[str]:
        """Manifest columns that hold paths relative to the manifest (media and feature references)."""
        return [self.columns[m] for m in ("audio", "image", *self.features) if self.columns.get(m)]

    def feature_manifest(self, source: str, names: Sequence[str], embeddings: Path, column: str,
                         target: Path) -> str:
        """JSONL text of a manifest at `target`: every row of the input manifest `source` (paths rewritten
        relative to `target`'s folder) plus `column` = `<embeddings>#<i>` for the row that was predicted i-th
        (`names[i]`, "file:line"), null for a row that was not (it had none of the modalities)."""
        path = Path(source).expanduser()
        index = {name: i for i, name in enumerate(names)}
        reference = os.path.relpath(embeddings.resolve(), target.parent.resolve())
        paths, lines = set(self.path_columns()), []
        for lineno, record in read_rows(path, self.format, self.has_header, self.delimiter):
            if column in record:
                raise ValueError(f"embeddings_column={column}: {path}:{lineno} has a column {column!r} already; "
                                 "choose another name")
            row = {str(k): (rebase(v, path.parent, target.parent) if isinstance(v, str) and text_value(v)
                            and (k in paths or is_reference(v)) else v) for k, v in record.items()}
            i = index.get(f"{path}:{lineno}")
            row[column] = None if i is None else f"{reference}#{i}"
            lines.append(json.dumps(row))
        return "\n".join(lines) + "\n"

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "modalities": list(self.active), "tokenizer_json": self._tokenizer_json,
                "normalizer": self.audio.normalizer.state_dict(), "image_mean": self.image.mean,
                "image_std": self.image.std,
                "features": {n: f.state_dict() for n, f in self.features.items() if n in self.active}}
