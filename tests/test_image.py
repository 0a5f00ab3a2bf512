"""Face-image emotion: layouts, splits, normalisation, augmentation, bad files, models, end to end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emotionsumm.data.image import ImageClassificationData
from emotionsumm.data.image_transforms import ImageReadError
from emotionsumm.models.image import ResNet18Classifier, SmallCNN

from .conftest import cli, make_cfg

SUBJECT = r"^(S\d+)_"


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)
    return path


def face_folders(root: Path, classes: tuple[str, ...] = ("happy", "sad"), subjects: int = 6, frames: int = 2,
                 size: int = 8) -> Path:
    """`<class>/S<subject>_001_<frame>.png` with random grey pixels (seeded)."""
    rng = np.random.default_rng(0)
    for label in classes:
        for s in range(subjects):
            for f in range(frames):
                write_png(root / label / f"S{s:03d}_001_{f:08d}.png", rng.integers(0, 256, (size, size)))
    return root


def image_data(root: Path, **kwargs) -> ImageClassificationData:
    defaults = {"split": "group", "group_regex": SUBJECT, "image_size": 8, "augment": None, "batch_size": 4}
    return ImageClassificationData(root=str(root), **{**defaults, **kwargs})


def subjects_of(data: ImageClassificationData, split: str) -> set[str]:
    return {Path(name).name.split("_")[0] for name in data.dataset(split).names}


def test_class_folders_give_sorted_classes_and_batches(tmp_path):
    data = image_data(face_folders(tmp_path / "faces", subjects=10))
    data.setup(None)
    assert data.class_names == ["happy", "sad"]
    assert sum(len(data.dataset(s)) for s in ("train", "val", "test")) == 40
    batch = data.collate([data.dataset("train")[i] for i in range(3)])
    assert batch["pixels"].shape == (3, 1, 8, 8) and batch["pixels"].dtype == torch.float32
    assert batch["labels"].tolist() == data.dataset("train").labels[:3]
    assert data.model_kwargs() == {"num_classes": 2, "in_channels": 1}
    assert data.class_counts == [data.dataset("train").labels.count(c) for c in (0, 1)]


def test_group_split_and_group_kfold_never_leak_a_subject(tmp_path):
    root = face_folders(tmp_path / "faces", subjects=12, frames=3)
    data = image_data(root, split_ratios=[0.5, 0.25, 0.25])
    data.setup(None)
    parts = {s: subjects_of(data, s) for s in ("train", "val", "test")}
    assert parts["train"] and parts["val"] and parts["test"]
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
    assert len(parts["train"] | parts["val"] | parts["test"]) == 12
    folded = image_data(root, split_ratios=[0.5, 0.25, 0.25], num_folds=3, fold=1)
    folded.setup(None)
    assert not subjects_of(folded, "train") & subjects_of(folded, "val")
    assert subjects_of(folded, "train") | subjects_of(folded, "val") == parts["train"]
    assert subjects_of(folded, "test") == parts["test"]
    with pytest.raises(ValueError, match="group_regex"):
        image_data(root, group_regex=r"^X(\d+)").setup(None)


def test_predefined_split_folders(tmp_path):
    for split, n in (("train", 3), ("validation", 2), ("test", 1)):
        face_folders(tmp_path / split, subjects=n, frames=1)
    data = image_data(tmp_path, split="predefined", group_regex=None)
    data.setup(None)
    assert {s: len(data.dataset(s)) for s in ("train", "val", "test")} == {"train": 6, "val": 4, "test": 2}
    assert all("/validation/" in name for name in data.dataset("val").names)


def write_fer_csv(path: Path, rows: list[tuple[int, list[int], str]], extra: str = "") -> Path:
    lines = ["emotion,pixels,Usage"] + [f"{y},{' '.join(map(str, px))},{usage}" for y, px, usage in rows]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_fer2013_csv_predefined_splits_and_train_only_normalisation(tmp_path):
    train_px = [[0, 51, 102, 153], [255, 255, 0, 0], [10, 20, 30, 40]]
    rows = [(0, train_px[0], "Training"), (1, train_px[1], "Training"), (2, train_px[2], "Training"),
            (1, [255] * 4, "PublicTest"), (2, [255] * 4, "PrivateTest"), (0, [200] * 4, "PrivateTest")]
    csv = write_fer_csv(tmp_path / "fer.csv", rows)
    kwargs = {"layout": "fer2013_csv", "split": "predefined", "group_regex": None, "image_size": 2,
              "class_names": ["angry", "happy", "sad"]}
    data = image_data(csv, **kwargs)
    data.setup(None)
    assert {s: len(data.dataset(s)) for s in ("train", "val", "test")} == {"train": 3, "val": 1, "test": 2}
    assert data.dataset("test").labels == [2, 0] and data.dataset("train").labels == [0, 1, 2]
    pixels = np.array(train_px, dtype=np.float64) / 255  # hand computation on the training rows only
    assert data.pipeline.mean == pytest.approx([pixels.mean()])
    assert data.pipeline.std == pytest.approx([pixels.std()])
    item = data.dataset("val")[0]["pixels"]
    assert item.shape == (1, 2, 2)
    assert torch.allclose(item, torch.full((1, 2, 2), (1.0 - pixels.mean()) / pixels.std()))
    state = data.state_dict()
    restored = image_data(csv, **kwargs, state=state)
    restored.setup(None, splits=("test",))
    assert set(restored.datasets) == {"test"} and restored.pipeline.mean == state["mean"]
    assert restored.class_names == ["angry", "happy", "sad"]


def test_malformed_fer2013_pixels_name_the_line_or_are_skipped(tmp_path):
    rows = [(0, [1, 2, 3, 4], "Training"), (1, [5, 6, 7, 8], "Training")]
    csv = write_fer_csv(tmp_path / "fer.csv", rows, extra="1,1 2 x 4,Training\n0,1 2 3,Training\n")
    kwargs = {"layout": "fer2013_csv", "split": "random", "split_ratios": [1.0, 0.0, 0.0], "group_regex": None,
              "image_size": 2}
    with pytest.raises(ValueError, match=rf"{csv}:4: malformed pixels.*'x'.*data.on_error=skip"):
        image_data(csv, **kwargs).setup(None)
    data = image_data(csv, **kwargs, on_error="skip")
    data.setup(None)
    assert len(data.dataset("train")) == 2 and data.skipped_rows == [f"{csv}:4", f"{csv}:5"]


def test_augmentation_only_in_training_and_reproducible(tmp_path):
    root = face_folders(tmp_path / "faces", subjects=10, size=16)
    augment = {"crop_scale": [0.5, 1.0], "hflip": 0.5, "rotation": 20}
    data = image_data(root, image_size=16, augment=augment)
    data.setup(None)
    val = data.dataset("val")
    assert torch.equal(val[0]["pixels"], val[0]["pixels"])
    train = data.dataset("train")
    draws = [train[0]["pixels"] for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    torch.manual_seed(3)
    first = train[1]["pixels"]
    torch.manual_seed(3)
    assert torch.equal(first, train[1]["pixels"])


def test_colour_images_are_converted_to_the_configured_channels(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 6, 3))
    rgba = np.concatenate([rgb, np.full((6, 6, 1), 255)], axis=2)
    paths = [write_png(tmp_path / "a" / "S001_rgb.png", rgb, "RGB"), write_png(tmp_path / "a" / "S002_rgba.png",
                                                                              rgba, "RGBA")]
    Image.fromarray(rgb.astype(np.uint8), "RGB").convert("P").save(tmp_path / "a" / "S003_palette.png")
    paths.append(tmp_path / "a" / "S003_palette.png")
    write_png(tmp_path / "b" / "S004_grey.png", rgb[..., 0])
    data = image_data(tmp_path, split="random", split_ratios=[1.0, 0.0, 0.0], image_size=6, normalize="none")
    data.setup(None)
    images = {Path(n).name: data.dataset("train").sources[i] for i, n in enumerate(data.dataset("train").names)}
    expected = np.asarray(Image.open(paths[0]).convert("L"))
    assert images["S001_rgb.png"].shape == (1, 6, 6)
    assert np.array_equal(images["S001_rgb.png"][0].numpy(), expected)
    assert np.array_equal(images["S002_rgba.png"][0].numpy(), expected)  # opaque alpha: same grey
    assert images["S003_palette.png"].shape == (1, 6, 6)
    colour = image_data(tmp_path, split="random", split_ratios=[1.0, 0.0, 0.0], image_size=6, channels=3)
    colour.setup(None)
    assert colour.collate([colour.dataset("train")[i] for i in range(4)])["pixels"].shape == (4, 3, 6, 6)
    assert colour.model_kwargs()["in_channels"] == 3 and len(colour.state_dict()["mean"]) == 3


def test_corrupt_or_empty_image_is_named_or_skipped_and_counted(tmp_path, caplog):
    root = face_folders(tmp_path / "faces", subjects=4)
    bad = root / "happy" / "S001_001_99999999.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    empty = root / "sad" / "S002_001_99999999.png"
    empty.write_bytes(b"")
    kwargs = {"split": "random", "split_ratios": [1.0, 0.0, 0.0]}
    with pytest.raises(ImageReadError, match=rf"{bad}.*data.on_error=skip"):
        image_data(root, **kwargs).setup(None)
    data = image_data(root, on_error="skip", **kwargs)
    with caplog.at_level(logging.WARNING):
        data.setup(None)
    assert len(data.dataset("train")) == 16 and sorted(data.skipped_rows) == sorted([str(bad), str(empty)])
    assert "skipped 2 of 18 image(s)" in caplog.text
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{root / 'happy' / 'S000_001_00000000.png'}\n{empty}\n")
    with pytest.raises(ImageReadError, match=rf"input line 2: {empty}: cannot read the image \(empty file\)"):
        data.predict_dataset(str(listing))


def test_resnet18_adapts_to_grey_input_and_loads_a_local_weights_file(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    reference = resnet18(weights=None)  # stands in for ImageNet weights: 3 channels, 1000 classes
    weights = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), weights)
    model = ResNet18Classifier(num_classes=5, in_channels=1, weights=str(weights)).eval()
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 5)
    assert torch.allclose(model.backbone.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    same_head = ResNet18Classifier(num_classes=1000, in_channels=3, weights=str(weights))
    assert torch.equal(same_head.head[-1].weight, reference.fc.weight)
    with pytest.raises(FileNotFoundError, match="model.weights"):
        ResNet18Classifier(num_classes=5, weights=str(tmp_path / "missing.pth"))


def trainable(model: torch.nn.Module) -> set[str]:
    return {name.split(".")[0] + "." + name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}


def test_frozen_backbone_trains_only_the_head_then_unfreezes_on_schedule():
    model = SmallCNN(num_classes=3, widths=[4, 8, 8], freeze_backbone=True, unfreeze_at_epochs={2: 1, 4: -1})
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.1.weight", "head.1.bias"}
    model.train()
    assert not model.backbone.blocks[0][1].training  # frozen BatchNorm keeps its statistics
    assert model.on_epoch_start(1) is False
    assert model.on_epoch_start(2) is True
    assert {n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone")} \
        == {"2"}
    assert model.backbone.blocks[2][1].training and not model.backbone.blocks[0][1].training
    assert model.on_epoch_start(4) is True and all(p.requires_grad for p in model.parameters())
    assert model.param_parts() == {"backbone": ("backbone.",), "head": ("head.",)}
    resnet = ResNet18Classifier(num_classes=3, freeze_backbone=True, unfreeze_at_epochs={1: 2})
    resnet.on_epoch_start(1)
    assert trainable(resnet) == {"backbone.layer3", "backbone.layer4", "head.1"}


@pytest.mark.slow
def test_demo_train_then_evaluate_and_predict_from_the_checkpoint(tmp_path):
    from emotionsumm.train import train

    run = tmp_path / "run"
    overrides = ["experiment=emotion_image", "model.widths=[8,16]", "data.batch_size=16", "trainer.max_steps=6",
                 "trainer.limit_val_batches=1", "trainer.progress_bar=false", "scheduler.warmup_steps=2"]
    metrics = train(make_cfg(run, overrides))
    assert {"test/acc", "test/macro_f1", "test/weighted_f1", "test/uar"} <= set(json.loads(
        (run / "metrics.json").read_text()))
    ckpt = sorted((run / "checkpoints").glob("epoch*.ckpt"))[-1]  # the best: what training tested
    state = torch.load(ckpt, weights_only=True)["data"]
    assert len(state["mean"]) == 1 and len(state["class_names"]) == 7
    proc = cli("evaluate", f"ckpt={ckpt}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["test/acc"] == pytest.approx(metrics["test/acc"])
    demo = Path(make_cfg(tmp_path / "x", ["experiment=emotion_image"]).data.root)
    inputs = [demo / "happy" / "S001_004_00000000.png", demo / "sadness" / "S002_006_00000000.png",
              demo / "surprise" / "S003_007_00000000.png"]
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(map(str, inputs)) + "\n")
    emb = tmp_path / "emb.npy"
    proc = cli("predict", f"ckpt={ckpt}", f"input={listing}", "export_embeddings=true", f"embeddings_path={emb}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert len(rows) == 3 and all(label in state["class_names"] and 0 < float(p) <= 1 for label, p in rows)
    assert np.load(emb).shape == (3, 16 * 9)
