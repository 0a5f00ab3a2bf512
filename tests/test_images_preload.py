"""Image preload (true | false | auto by a memory budget) and the content-keyed cache of image checks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emotionsumm.config.ranges import range_errors
from emotionsumm.config.stored import inference_config
from emotionsumm.data.image import ImageClassificationData
from emotionsumm.data.image_transforms import ImageReadError

from .conftest import make_cfg
from .test_image import face_folders, image_data, write_fer_csv

IMAGES = 24  # face_folders' default: 2 classes x 6 subjects x 2 frames, 8x8 grey PNGs


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every path PIL.Image.open is asked to open."""
    calls: list[str] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        calls.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return calls


def lazy(root: Path, cache: Path, **kwargs) -> ImageClassificationData:
    data = image_data(root, preload=False, cache_dir=str(cache), **kwargs)
    data.setup(None)
    return data


def contents(data: ImageClassificationData) -> dict[str, tuple[list[str], list[int], torch.Tensor]]:
    """Per split: the example names, labels and the stacked model inputs (what training reads)."""
    out = {}
    for split, ds in data.datasets.items():
        out[split] = (ds.names, ds.labels, torch.stack([ds[i]["pixels"] for i in range(len(ds))]))
    return out


def touch_later(path: Path) -> None:
    """Move the file's mtime 2 s on, so a same-second rewrite is still seen as a change."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_auto_preloads_a_small_set_and_reads_from_disk_over_the_budget(tmp_path, caplog):
    root = face_folders(tmp_path / "faces")
    with caplog.at_level(logging.INFO, logger="emotionsumm.data.image"):
        small = image_data(root, preload="auto")
        small.setup(None)
    assert all(isinstance(v, torch.Tensor) for ds in small.datasets.values() for v in ds.inputs)
    assert small.preload is True
    assert ("data: preload=auto: 24 images x 64 B = 1.5 KB <= data.preload_budget_mb=2048: decoded into memory "
            "once") in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emotionsumm.data.image"):
        tight = image_data(root, preload="auto", preload_budget_mb=0.001)  # 1,000 bytes
        tight.setup(None)
    assert all(isinstance(v, Path) for ds in tight.datasets.values() for v in ds.inputs)
    assert [m for m in caplog.messages if "preload" in m] == [
        "data: preload=auto: 24 images x 64 B = 1.5 KB > data.preload_budget_mb=0.001: read from disk each epoch "
        "(data.preload=true forces it)"]


def test_auto_keeps_fer2013_csv_pixels_in_memory_whatever_the_budget(tmp_path, caplog):
    rows = [(i % 2, [i] * 4, "Training") for i in range(6)] + [(0, [9] * 4, "PublicTest")]
    csv = write_fer_csv(tmp_path / "fer.csv", rows)
    with caplog.at_level(logging.INFO, logger="emotionsumm.data.image"):
        data = image_data(csv, layout="fer2013_csv", split="predefined", group_regex=None, image_size=2,
                          preload="auto", preload_budget_mb=0, cache_dir=str(tmp_path / "cache"))
        data.setup(None)
    assert all(isinstance(v, torch.Tensor) for ds in data.datasets.values() for v in ds.inputs)
    assert ("data: preload=auto: 7 images x 4 B = 28 B: decoded into memory (a CSV's pixels have no image file to "
            "read again)") in caplog.messages
    assert not (tmp_path / "cache").exists()


def test_preload_takes_true_false_auto_only_and_a_budget_of_zero_or_more(tmp_path):
    with pytest.raises(ValueError, match=r"data.preload='yes' is not allowed; choose one of \[True, False, 'auto'\]"):
        image_data(tmp_path, preload="yes")
    with pytest.raises(ValueError, match=r"data.preload_budget_mb=-1 is out of range; allowed: >= 0"):
        image_data(tmp_path, preload_budget_mb=-1)
    assert range_errors("data.preload_budget_mb", -5)[0].startswith("data.preload_budget_mb=-5 is out of range")
    assert range_errors("data.preload_budget_mb", 0) == []


def test_preload_true_false_auto_and_a_warm_cache_give_the_same_examples(tmp_path):
    root = face_folders(tmp_path / "faces")
    results = {}
    for mode in (True, False, "auto"):
        data = image_data(root, preload=mode, cache_dir=str(tmp_path / "cache"))
        data.setup(None)
        results[mode] = (contents(data), data.pipeline.mean, data.pipeline.std)
    warm = lazy(root, tmp_path / "cache")
    results["warm"] = (contents(warm), warm.pipeline.mean, warm.pipeline.std)
    reference = results[True]
    for mode, (splits, mean, std) in results.items():
        assert (mean, std) == (reference[1], reference[2]), mode
        assert splits.keys() == reference[0].keys()
        for split, (names, labels, pixels) in splits.items():
            assert names == reference[0][split][0] and labels == reference[0][split][1], (mode, split)
            assert torch.equal(pixels, reference[0][split][2]), (mode, split)


def test_a_second_set_up_opens_no_image_and_keeps_no_decoded_image(tmp_path, opened, caplog):
    root, cache = face_folders(tmp_path / "faces"), tmp_path / "cache"
    cold = lazy(root, cache)
    assert sorted(opened) == sorted(map(str, root.glob("*/*.png")))  # once each: the check's decode gives mean/std
    assert [p.name for p in cache.iterdir()] and all(p.suffix == ".json" for p in cache.iterdir())
    opened.clear()
    with caplog.at_level(logging.INFO, logger="emotionsumm.data.image"):
        warm = lazy(root, cache)
    assert opened == []
    (entry,) = cache.iterdir()
    assert f"data: image checks: 24 from the cache {entry}, 0 decoded" in caplog.messages
    assert (warm.pipeline.mean, warm.pipeline.std) == (cold.pipeline.mean, cold.pipeline.std)
    assert all(isinstance(v, Path) for ds in warm.datasets.values() for v in ds.inputs)
    assert warm.dataset("train").names == cold.dataset("train").names


def test_a_changed_file_alone_is_checked_again_and_a_corrupt_one_is_still_refused_by_name(tmp_path, opened):
    root, cache = face_folders(tmp_path / "faces"), tmp_path / "cache"
    lazy(root, cache, normalize="none")
    victim = sorted(root.glob("sad/*.png"))[3]
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(victim)
    touch_later(victim)
    opened.clear()
    lazy(root, cache, normalize="none")
    assert opened == [str(victim)]  # only the changed file

    victim.write_bytes(victim.read_bytes()[:40])  # truncated: a corrupt image
    touch_later(victim)
    messages = []
    for _ in range(2):  # checked, then refused again from the cached verdict without opening the file
        opened.clear()
        with pytest.raises(ImageReadError, match=f"{victim}: cannot read the image") as err:
            lazy(root, cache, normalize="none")
        messages.append(str(err.value))
        assert opened == ([str(victim)] if len(messages) == 1 else [])
    assert messages[0] == messages[1] and "data.on_error=skip" in messages[0]

    opened.clear()
    skipped = lazy(root, cache, normalize="none", on_error="skip")
    assert opened == [] and skipped.skipped_rows == [str(victim)]
    assert sum(len(ds) for ds in skipped.datasets.values()) == IMAGES - 1

    victim.unlink()  # a file that vanished is a miss, never a cached verdict
    opened.clear()
    assert sum(len(ds) for ds in lazy(root, cache, normalize="none").datasets.values()) == IMAGES - 1
    assert opened == []


def test_a_damaged_cache_file_is_rebuilt_not_trusted(tmp_path, opened, caplog):
    root, cache = face_folders(tmp_path / "faces"), tmp_path / "cache"
    lazy(root, cache, normalize="none")
    (entry,) = cache.iterdir()
    entry.write_text('{"settings": ', encoding="utf-8")
    opened.clear()
    with caplog.at_level(logging.WARNING, logger="emotionsumm.data.image_checks"):
        lazy(root, cache, normalize="none")
    assert len(opened) == IMAGES and f"data: image check cache {entry} is unreadable" in caplog.text
    opened.clear()
    lazy(root, cache, normalize="none")
    assert opened == []


def test_other_settings_do_not_reuse_the_verdicts(tmp_path, opened):
    root, cache = face_folders(tmp_path / "faces"), tmp_path / "cache"
    lazy(root, cache, normalize="none")
    opened.clear()
    with pytest.raises(ImageReadError, match="8x8 pixels is smaller than data.min_image_size=16"):
        lazy(root, cache, normalize="none", image_size=16, min_image_size=16)
    assert len(opened) == 1  # checked again under the new settings: the first image is too small
    assert len(list(cache.iterdir())) == 2


def test_shipped_image_configs_default_to_auto_with_a_cache_under_paths_cache_dir(tmp_path):
    for data in ("image_demo", "image_ckplus", "image_fer2013_folders", "image_fer2013"):
        cfg = make_cfg(tmp_path / data, [f"data={data}", "model=image_cnn", f"paths.cache_dir={tmp_path}/c"])
        assert (cfg.data.preload, cfg.data.preload_budget_mb) == ("auto", 2048), data
        assert cfg.data.cache_dir == f"{tmp_path}/c/checks/images"
    stored = {"model": {"_target_": "emotionsumm.models.image.SmallCNN"},
              "policy": {"_target_": "emotionsumm.policies.classification.ClassificationPolicy"},
              "data": {"_target_": "emotionsumm.data.image.ImageClassificationData", "preload": "auto",
                       "cache_dir": "/old/cache/checks/images"},
              "paths": {"cache_dir": "/old/cache"}}
    assert inference_config(stored, tmp_path / "mine").data.cache_dir == str(tmp_path / "mine" / "checks" / "images")


def test_statistics_follow_a_changed_training_image(tmp_path, opened):
    root, cache = face_folders(tmp_path / "faces"), tmp_path / "cache"
    lazy(root, cache)
    train = lazy(root, cache).dataset("train")
    victim = train.inputs[2]
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(victim)
    touch_later(victim)
    opened.clear()
    changed = lazy(root, cache)  # one verdict re-checked; the statistics of the new training set computed again
    assert opened.count(str(victim)) == 2 and len(opened) == len(train) + 1
    preloaded = image_data(root, preload=True)
    preloaded.setup(None)
    assert (changed.pipeline.mean, changed.pipeline.std) == (preloaded.pipeline.mean, preloaded.pipeline.std)
    assert contents(changed)["train"][2].equal(contents(preloaded)["train"][2])


def test_a_file_is_known_by_its_resolved_path_through_symlinked_folders_and_files(tmp_path):
    from emotionsumm.data.cache_keys import file_ident

    real = face_folders(tmp_path / "faces")
    (tmp_path / "link").symlink_to(real)
    target = sorted(real.glob("happy/*.png"))[0]
    (tmp_path / "file.png").symlink_to(target)
    stat = target.stat()
    expected = (str(target), stat.st_size, stat.st_mtime_ns)
    folders: dict[str, str] = {}
    assert file_ident(tmp_path / "link" / "happy" / target.name, folders) == expected
    assert file_ident(tmp_path / "file.png", folders) == expected == file_ident(target)


def test_damaged_statistics_in_the_cache_are_computed_again(tmp_path, opened):
    import json

    root, cache = face_folders(tmp_path / "faces"), tmp_path / "cache"
    cold = lazy(root, cache)
    (entry,) = cache.iterdir()
    stored = json.loads(entry.read_text())
    (key,) = stored["stats"]
    stored["stats"][key] = [["0.5"], [0.0]]
    entry.write_text(json.dumps(stored))
    opened.clear()
    again = lazy(root, cache)
    assert (again.pipeline.mean, again.pipeline.std) == (cold.pipeline.mean, cold.pipeline.std)
    assert len(opened) == IMAGES  # the whole cache file was distrusted: every image checked again
