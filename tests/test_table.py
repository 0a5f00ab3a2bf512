"""One table and one split/fold plan for every modality: the same options (one file or one per split, random /
predefined / group splits, k-fold, on_error, delimiters) whatever is read, and a new modality in a few lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from emotionsumm.data.audio import AudioClassificationData
from emotionsumm.data.dialogue import DialogueSummaryData
from emotionsumm.data.image import ImageClassificationData
from emotionsumm.data.multimodal import MultimodalData
from emotionsumm.data.readers import column
from emotionsumm.data.table import Examples, TableData, TableDataset
from emotionsumm.data.text import TextClassificationData
from emotionsumm.interfaces import Data

CLASSES = ["joy", "sadness", "anger"]
SPLITS = ("train", "val", "test")


def one_table(path: Path, n: int = 60, delimiter: str = "|", split_column: bool = False) -> Path:
    """`text|label|speaker[|split]` rows: 3 classes, 6 speakers."""
    header = ["text", "label", "speaker"] + (["split"] if split_column else [])
    lines = [delimiter.join(header)]
    for i in range(n):
        text = f"row {i} i feel {CLASSES[i % 3]}" + (", really" if delimiter != "," else "")
        split = [("train", "validation", "test")[i // 3 % 3]] if split_column else []
        lines.append(delimiter.join([text, CLASSES[i % 3], f"spk{i % 6}", *split]))
    path.write_text("\n".join(lines) + "\n")
    return path


def text_data(tmp_path: Path, **kwargs: Any) -> TextClassificationData:
    kwargs = {"vocab_size": 60, "max_length": 16, "tokenizer_cache_dir": str(tmp_path / "tok"), **kwargs}
    return TextClassificationData(**kwargs)


def texts(data: TableData, split: str) -> list[str]:
    return data.dataset(split).texts


def test_one_delimited_file_of_texts_is_split_randomly_stratified_and_reproducibly(tmp_path):
    table = one_table(tmp_path / "all.txt")
    data = text_data(tmp_path, file=str(table), split="random", delimiter="|", split_ratios=[0.6, 0.2, 0.2])
    data.setup(None)
    assert data.class_names == sorted(CLASSES)
    sizes = {s: len(data.dataset(s)) for s in SPLITS}
    assert sizes == {"train": 36, "val": 12, "test": 12}
    assert all(data.dataset("test").labels.count(c) == 4 for c in range(3))  # stratified by label
    assert set().union(*(texts(data, s) for s in SPLITS)) == {f"row {i} i feel {CLASSES[i % 3]}, really"
                                                              for i in range(60)}
    again = text_data(tmp_path, file=str(table), split="random", delimiter="pipe", split_ratios=[0.6, 0.2, 0.2])
    again.setup(None)
    assert all(texts(again, s) == texts(data, s) for s in SPLITS)
    with pytest.raises(ValueError, match=r"data.split='halves' is not allowed; choose one of"):
        text_data(tmp_path, file=str(table), split="halves")


def test_a_split_column_groups_and_folds_work_for_texts_as_for_any_modality(tmp_path):
    table = one_table(tmp_path / "all.csv", delimiter=",", split_column=True)
    data = text_data(tmp_path, file=str(table), split="predefined")
    data.setup(None)
    assert {s: len(data.dataset(s)) for s in SPLITS} == {"train": 21, "val": 21, "test": 18}
    by_group = text_data(tmp_path, file=str(table), split="group", group_column="speaker", test_groups=["spk5"])
    by_group.setup(None)
    assert all(int(t.split()[1]) % 6 == 5 for t in texts(by_group, "test"))
    assert len(by_group.dataset("test")) == 10 and by_group.dataset("val") is None
    held = set()
    for fold in range(5):
        folded = text_data(tmp_path, file=str(table), split="group", group_column="speaker", test_groups=["spk5"],
                           num_folds=5, fold=fold)
        folded.setup(None)
        speakers = {s: {int(t.split()[1]) % 6 for t in texts(folded, s)} for s in ("train", "val")}
        assert len(speakers["val"]) == 1 and not speakers["train"] & speakers["val"]  # whole speakers per fold
        held |= speakers["val"]
    assert held == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match=r"data.test_groups: group\(s\) \['spk9'\] not in the data"):
        text_data(tmp_path, file=str(table), split="group", group_column="speaker", test_groups=["spk9"]).setup(None)


def test_audio_and_images_take_one_source_per_split(tmp_path):
    rate = 8000
    root = tmp_path / "speech"
    (root / "wav").mkdir(parents=True)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        lines = ["path,label"]
        for k in range(n):
            name = f"wav/{split}_{k}.wav"
            sf.write(str(root / name), 0.3 * np.sin(np.arange(2400) * (0.05 + 0.1 * (k % 2))), rate)
            lines.append(f"{name},{('low', 'high')[k % 2]}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    features = {"sample_rate": rate, "duration": 0.25, "n_mels": 8, "n_fft": 128, "win_length": 128, "hop_length": 64}
    audio = AudioClassificationData(root=str(root), split="files", files={s: f"{s}.csv" for s in SPLITS},
                                    features=features, augment={}, group_column=None)
    audio.setup()
    assert {s: [p.name for p in audio.dataset(s).paths] for s in ("val", "test")} == {
        "val": ["val_0.wav", "val_1.wav"], "test": ["test_0.wav", "test_1.wav"]}
    assert audio.class_names == ["high", "low"] and len(audio.dataset("train")) == 4

    rng = np.random.default_rng(0)
    for split in SPLITS:
        for label in ("happy", "sad"):
            (tmp_path / split / label).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (8, 8)).astype(np.uint8)).save(tmp_path / split / label / "a.png")
    images = ImageClassificationData(split="files", files={s: str(tmp_path / s) for s in SPLITS}, image_size=8,
                                     augment=None)
    images.setup(None)
    assert all(len(images.dataset(s)) == 2 and f"/{s}/" in images.dataset(s).names[0] for s in SPLITS)


def test_one_multimodal_manifest_is_split_like_any_table(tmp_path):
    rows = [{"text": f"so {CLASSES[i % 3]} {i}", "label": CLASSES[i % 3]} for i in range(30)]
    manifest = tmp_path / "all.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = MultimodalData(file=str(manifest), split="random", modalities=["text"],
                          text={"vocab_size": 60, "max_length": 8}, num_folds=3, fold=1)
    data.setup(None)
    assert {s: len(data.dataset(s)) for s in SPLITS} == {"train": 16, "val": 8, "test": 3}
    assert data.active == ["text"] and data.collate([data.dataset("val")[0]])["text_input_ids"].shape[0] == 1


def test_every_data_object_is_the_data_the_trainer_takes(tmp_path):
    table = one_table(tmp_path / "all.csv", delimiter=",")
    data = text_data(tmp_path, file=str(table), split="random", balanced_sampling=True)
    data.setup(None)
    assert isinstance(data, Data) and data.train_batches() is None and len(data.sample_weights()) == 48
    for cls in (AudioClassificationData, ImageClassificationData, MultimodalData, DialogueSummaryData):
        for method in ("dataset", "collate", "train_batches", "sample_weights", "state_dict"):
            assert callable(getattr(cls, method)), (cls, method)


# ---- a new modality: precomputed feature vectors (docs/extending.md, "Add a modality") -------------------
class VectorData(TableData):
    load_errors = (OSError, ValueError)  # what `load` raises for a bad file: raise or skip (data.on_error)

    def __init__(self, file: str, state: dict | None = None, **common: Any) -> None:
        super().__init__(state=state, **common)  # split, folds, on_error, classes, batch sizes, ...
        self.file, self.dim = file, (state or {}).get("dim")

    def parse(self, record: dict, where: str, path: Path) -> Path:  # one table row -> what `load` needs
        return path.parent / column(record, "path", where, "data.path_column")

    def load(self, item: Path) -> torch.Tensor:  # once per row of the requested splits
        return torch.from_numpy(np.load(item)).float()

    def fit(self, train: Examples | None, run_dir: Any) -> None:  # the training split only
        self.dim = self.dim or train.inputs[0].numel()

    def make_dataset(self, split: str, examples: Examples) -> TableDataset:
        return TableDataset(examples.inputs, examples.ids, [r.where for r in examples.rows],
                            lambda x, train: {"features": x})

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return {"features": torch.stack([e["features"] for e in examples]),
                "labels": torch.tensor([e["label"] for e in examples])}

    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs(), "in_features": self.dim}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "dim": self.dim}


def test_a_new_modality_is_a_few_methods_and_gets_every_option(tmp_path, caplog):
    lines = ["path,label,speaker"]
    for i in range(24):
        np.save(tmp_path / f"v{i}.npy", np.full(5, i % 2, dtype=np.float32))
        lines.append(f"v{i}.npy,{('calm', 'angry')[i % 2]},s{i % 4}")
    (tmp_path / "v23.npy").write_bytes(b"not a numpy file")
    (tmp_path / "vectors.csv").write_text("\n".join(lines) + "\n")
    common = {"file": str(tmp_path / "vectors.csv"), "split": "group", "group_column": "speaker",
              "test_groups": ["s3"], "batch_size": 4}
    with pytest.raises(ValueError, match=r"vectors.csv:25: .*data.on_error=skip"):
        VectorData(**common).setup(None)
    data = VectorData(**common, on_error="skip", num_folds=3, fold=0)
    data.setup(None)
    assert data.class_names == ["angry", "calm"] and data.skipped == {"test": 1}
    assert {s: len(data.dataset(s)) for s in SPLITS} == {"train": 12, "val": 6, "test": 5}
    batch = data.collate([data.dataset("train")[i] for i in range(4)])
    assert batch["features"].shape == (4, 5) and data.model_kwargs() == {"num_classes": 2, "in_features": 5}
    restored = VectorData(**common, on_error="skip", state=data.state_dict())
    restored.setup(None, ("test",))
    assert restored.dataset("train") is None and restored.model_kwargs()["in_features"] == 5
