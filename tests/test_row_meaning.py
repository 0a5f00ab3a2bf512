"""Rows never change meaning silently: a list is not a text, an unclosed CSV quote does not merge rows, a
header or a float is not a class, a split missing classes is said, a huge image names its path. Each bad row
stops with its file and line (or path) and key, or with `data.on_error=skip` is left out and counted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotionsumm.data.dialogue import DialogueSummaryData
from emotionsumm.data.image import ImageClassificationData
from emotionsumm.data.image_transforms import ImageReadError
from emotionsumm.data.multimodal import MultimodalData
from emotionsumm.data.readers import read_rows
from tests.test_bad_rows import SKIP_RE, good_rows, skip_logged, text_data, write_jsonl


def csv_rows(n: int = 60) -> list[str]:
    return [f"i feel {'great' if i % 2 else 'down'} today {i},{'sadness' if i % 2 else 'joy'}" for i in range(n)]


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("text,label\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- 1. a list where a text belongs --------------------------------------------------------------
def test_a_list_given_as_text_names_file_line_and_key_or_is_skipped_and_counted(tmp_path, caplog):
    train = write_jsonl(tmp_path / "train.jsonl", [*good_rows(), {"text": ["a", "b"], "label": "joy"}])
    with pytest.raises(ValueError, match=r"train.jsonl:7: data.text_field='text' holds a JSON list \(\[\"a\", "
                                         rf"\"b\"\]\), not a text; make it one string .*{SKIP_RE}"):
        text_data(tmp_path, {"train": str(train)}).setup(None, ("train",))
    data = text_data(tmp_path, {"train": str(train)}, on_error="skip")
    with caplog.at_level(logging.WARNING):
        data.setup(None, ("train",))
    assert len(data.dataset("train")) == 6 and data.skipped == {"train": 1}
    assert not any("[" in text for text in data.dataset("train").texts) and skip_logged(caplog, 1, "train.jsonl:7")
    labels = write_jsonl(tmp_path / "labels.jsonl", [*good_rows(2), {"text": "ok", "label": {"name": "joy"}}])
    with pytest.raises(ValueError, match=r"labels.jsonl:3: data.label_field='label' holds a JSON object"):
        text_data(tmp_path, {"train": str(labels)}, class_names=None).setup(None, ("train",))
    manifest = write_jsonl(tmp_path / "mm.jsonl", [{"text": "so happy", "label": "joy"},
                                                   {"text": ["so", "sad"], "label": "sadness"}])
    with pytest.raises(ValueError, match=r"mm.jsonl:2: column 'text' \(modality text\) holds a JSON list"):
        MultimodalData(files={"train": str(manifest)}, modalities=["text"],
                       text={"vocab_size": 60, "max_length": 8}).setup(None, ("train",))


def test_a_dialogue_as_a_list_of_turns_is_joined_by_lines_and_other_lists_are_refused(tmp_path, caplog):
    turns = ["#Person1#: Hi.", "#Person2#: Hello."]
    rows = [{"dialogue": turns, "summary": "They greet."}, {"dialogue": "\n".join(turns), "summary": "They greet."},
            {"dialogue": [{"speaker": "A", "text": "Hi."}], "summary": "s"},
            {"dialogue": "d", "summary": ["one", "two"]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(ValueError, match=rf"train.jsonl:3: data.dialogue_field='dialogue' holds a JSON list "
                                         rf"\(\[\{{\"speaker\".*not a text.*{SKIP_RE}"):
        DialogueSummaryData(files={"train": str(train)}).read("train")
    data = DialogueSummaryData(files={"train": str(train)}, on_error="skip")
    with caplog.at_level(logging.WARNING):
        read = data.read("train")
    assert [r.dialogue for r in read] == ["#Person1#: Hi.\n#Person2#: Hello."] * 2
    assert data.stats["train"]["skipped"] == 2 and skip_logged(caplog, 2, "train.jsonl:3")
    summary = write_jsonl(tmp_path / "summary.jsonl", rows[3:])
    with pytest.raises(ValueError, match=r"summary.jsonl:1: data.summary_fields: 'summary' holds a JSON list"):
        DialogueSummaryData(files={"train": str(summary)}).read("train")


# ---- 2. an unclosed CSV quote ------------------------------------------------------------------
@pytest.mark.parametrize("broken, error", [
    ('"i feel odd,joy\n"so sad",sadness', r"train.csv:11: broken CSV quoting \(',' expected after '\"', line 12\)"),
    ('"i feel odd,joy\nso sad,sadness\nmy 5",joy', r"train.csv:11: the quoted field 1 spans lines 11-13 and holds "
                                                   r"the rest of its row and then a whole row \('so sad,sadness'\)"),
    ('"i feel odd,joy\nso sad,sadness', r"train.csv:11: broken CSV quoting \(unexpected end of data"),
])
def test_an_unclosed_csv_quote_names_its_line_and_never_merges_rows(tmp_path, caplog, broken, error):
    good = csv_rows()
    train = write_csv(tmp_path / "train.csv", [*good[:9], broken, *good[9:]])
    with pytest.raises(ValueError, match=rf"{error}.*{SKIP_RE}"):
        text_data(tmp_path, {"train": str(train)}).setup(None, ("train",))
    data = text_data(tmp_path, {"train": str(train)}, on_error="skip")
    with caplog.at_level(logging.WARNING):
        data.setup(None, ("train",))
    kept = data.dataset("train").texts
    assert data.skipped == {"train": 1} and skip_logged(caplog, 1, "train.csv:11")
    if not broken.endswith("sadness"):  # the quote did not run to the end: every good row is kept, as it was
        assert kept == [line.rsplit(",", 1)[0] for line in good]
        after = 11 + broken.count("\n") + 1  # the line of the row after the broken one
        assert data.skipped_rows == [f"{train}:11"] and data.dataset("train").names[9] == f"{train}:{after}"


def test_a_quoted_multi_line_text_still_loads_with_the_right_line_numbers(tmp_path):
    texts = ['"I am sad\nreally, truly sad",sadness', '"Dear John,\nI miss you\nLove, Mary",joy', "plain,joy"]
    train = write_csv(tmp_path / "train.csv", texts)
    assert [(line, row["text"]) for line, row in read_rows(train)] == [
        (2, "I am sad\nreally, truly sad"), (4, "Dear John,\nI miss you\nLove, Mary"), (7, "plain")]


# ---- 3. labels that are not classes --------------------------------------------------------------
def test_a_repeated_header_is_not_a_class_and_names_its_line(tmp_path, caplog):
    good = csv_rows(8)
    train = write_csv(tmp_path / "train.csv", [*good[:4], "text,label", *good[4:]])
    with pytest.raises(ValueError, match=rf"train.csv:6: the header repeated as a row .*{SKIP_RE}"):
        text_data(tmp_path, {"train": str(train)}, class_names=None).setup(None, ("train",))
    data = text_data(tmp_path, {"train": str(train)}, class_names=None, on_error="skip")
    with caplog.at_level(logging.WARNING):
        data.setup(None, ("train",))
    assert data.class_names == ["joy", "sadness"] and data.skipped_rows == [f"{train}:6"]
    jsonl = write_jsonl(tmp_path / "train.jsonl", [*good_rows(2), {"text": "text", "label": "label"}])
    with pytest.raises(ValueError, match=r"train.jsonl:3: the header repeated as a row"):
        text_data(tmp_path, {"train": str(jsonl)}, class_names=None).setup(None, ("train",))


@pytest.mark.parametrize("label, shown", [(1.5, r"1.5 in data.label_field='label' is a float"),
                                          (True, r"True in data.label_field='label' is a bool"),
                                          (float("nan"), r"nan in data.label_field='label' is a float"),
                                          ("2.0", r"'2.0' in data.label_field='label' is a number that is not an "
                                                  r"integer"),
                                          ("nan", r"'nan' in data.label_field='label' is a number that is not")])
def test_a_label_that_is_not_a_string_or_an_integer_is_refused(tmp_path, caplog, label, shown):
    rows = [*good_rows(4), {"text": "odd one", "label": label}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN as JSON's NaN literal
    with pytest.raises(ValueError, match=rf"train.jsonl:5: label {shown}.*e.g. 2, not 2.0.*{SKIP_RE}"):
        text_data(tmp_path, {"train": str(train)}, class_names=None).setup(None, ("train",))
    data = text_data(tmp_path, {"train": str(train)}, class_names=None, on_error="skip")
    data.setup(None, ("train",))
    assert data.class_names == ["joy", "sadness"] and data.skipped == {"train": 1}
    ids = write_jsonl(tmp_path / "ids.jsonl", [{"text": f"t{i}", "label": i % 3} for i in range(6)])
    data = text_data(tmp_path, {"train": str(ids)}, class_names=None)  # integer ids (and digit strings) are fine
    data.setup(None, ("train",))
    assert data.class_names == ["0", "1", "2"]


# ---- 4. splits missing classes -----------------------------------------------------------------------
def test_a_split_with_fewer_classes_than_the_task_is_a_warning(tmp_path, caplog):
    train = write_jsonl(tmp_path / "train.jsonl", good_rows())
    val = write_jsonl(tmp_path / "val.jsonl", [r for r in good_rows() if r["label"] == "joy"])
    data = text_data(tmp_path, {"train": str(train), "val": str(val)})
    with caplog.at_level(logging.WARNING):
        data.setup(None, ("train", "val"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["data: split val has 1 of the task's 2 classes: ['joy']; the task's classes are ['joy', "
                        "'sadness'] (its metrics do not measure the missing ones; check the split: data.split, "
                        "data.split_ratios, data.val_groups/test_groups)"]
    caplog.clear()
    root = tmp_path / "faces"
    (root / "joy").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((16, 16), 40 * i, dtype=np.uint8)).save(root / "joy" / f"S{i}.png")
    with caplog.at_level(logging.WARNING):
        ImageClassificationData(root=str(root), image_size=16, augment=None).setup(None)
    assert "data: the task has 1 class ['joy'] (data.class_names, or inferred from the training labels): accuracy " \
           "is trivially 1.0 and the loss 0.0" in caplog.text


# ---- 5. decompression bombs ---------------------------------------------------------------------
def test_a_decompression_bomb_image_names_its_path_or_is_skipped_and_counted(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # PIL warns above this, refuses above twice this
    root = tmp_path / "faces"
    for label in ("joy", "sadness"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16), 30 * i, dtype=np.uint8)).save(root / label / f"S{i}.png")
    bomb, large = root / "joy" / "S8_bomb.png", root / "sadness" / "S9_large.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(bomb)  # 1024 pixels: DecompressionBombError
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(large)  # 400 pixels: DecompressionBombWarning
    kwargs = {"split": "random", "split_ratios": [1.0, 0.0, 0.0], "image_size": 16, "augment": None}
    with pytest.raises(ImageReadError, match=rf"{bomb}: cannot read the image \(too large to decode safely .*1024 "
                                             rf"pixels.*{SKIP_RE}"):
        ImageClassificationData(root=str(root), **kwargs).setup(None)
    data = ImageClassificationData(root=str(root), on_error="skip", **kwargs)
    with caplog.at_level(logging.WARNING):
        data.setup(None)
    assert len(data.dataset("train")) == 6 and sorted(data.skipped_rows) == [str(bomb), str(large)]
    assert "skipped 2 of 8 image(s)" in caplog.text
