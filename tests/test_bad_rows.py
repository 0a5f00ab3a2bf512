"""No bad row passes silently: each one stops with its file and line (or path) and the fix, or, with
`data.on_error=skip`, is left out and counted in the log. Demo data never touches a user's folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from emotionsumm.data.audio import AudioClassificationData
from emotionsumm.data.audio_features import AudioReadError, probe_audio, read_audio
from emotionsumm.data.dialogue import DialogueSummaryData
from emotionsumm.data.image import ImageClassificationData
from emotionsumm.data.image_transforms import ImageReadError
from emotionsumm.data.multimodal import MultimodalData
from emotionsumm.data.readers import read_lines, read_rows
from emotionsumm.data.text import TextClassificationData

CLASSES = ["joy", "sadness"]
SKIP_RE = r"data.on_error=skip"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def good_rows(n: int = 6) -> list[dict]:
    return [{"text": f"i feel {'great' if i % 2 else 'down'} today {i}", "label": CLASSES[i % 2]} for i in range(n)]


def text_data(tmp_path: Path, files: dict[str, str | None], **kwargs) -> TextClassificationData:
    kwargs = {"class_names": CLASSES, "vocab_size": 60, "max_length": 16, "batch_size": 4, **kwargs}
    return TextClassificationData(files=files, tokenizer_cache_dir=str(tmp_path / "tok"), **kwargs)


def skip_logged(caplog: pytest.LogCaptureFixture, count: int, example: str) -> bool:
    return any(f"skipped {count} of" in r.getMessage() and SKIP_RE in r.getMessage() and example in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


# ---- 1. null, empty or whitespace-only texts ---------------------------------------------------
def test_null_empty_or_blank_text_names_file_and_line_or_is_skipped_and_counted(tmp_path, caplog):
    bad = [{"text": None, "label": "joy"}, {"text": "", "label": "sadness"}, {"text": " \t ", "label": "joy"},
           {"text": "fine text", "label": None}]
    train = write_jsonl(tmp_path / "train.jsonl", [*good_rows(), *bad])
    with pytest.raises(ValueError, match=rf"train.jsonl:7: null, empty or whitespace-only value in "
                                         rf"data.text_field='text'; fix the row, or set {SKIP_RE}"):
        text_data(tmp_path, {"train": str(train)}).setup(None, ("train",))
    data = text_data(tmp_path, {"train": str(train)}, on_error="skip")
    with caplog.at_level(logging.WARNING):
        data.setup(None, ("train",))
    assert len(data.dataset("train")) == 6 and data.skipped == {"train": 4}
    assert "None" not in data.dataset("train").texts
    assert skip_logged(caplog, 4, "train.jsonl:7")
    csv = tmp_path / "train.csv"
    csv.write_text("text,label\ni am glad,joy\n,sadness\n")
    with pytest.raises(ValueError, match=r"train.csv:3: null, empty or whitespace-only value in data.text_field"):
        text_data(tmp_path, {"train": str(csv)}).setup(None, ("train",))
    with pytest.raises(ValueError, match=r"data.on_error='ignore' is not allowed"):
        text_data(tmp_path, {"train": str(csv)}, on_error="ignore")


def test_null_dialogue_or_summary_names_file_and_line_or_is_skipped_and_counted(tmp_path, caplog):
    ok = {"dialogue": "#Person1#: Hi.\n#Person2#: Hello.", "summary": "They greet."}
    rows = [ok, {"dialogue": None, "summary": "s"}, {"dialogue": "d", "summary": None},
            {"dialogue": "d", "summary": " "}, ok]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    data = DialogueSummaryData(files={"train": str(train)}, summary_fields=["summary"])
    with pytest.raises(ValueError, match=rf"train.jsonl:2: empty dialogue \(null, .*{SKIP_RE}"):
        data.read("train")
    with pytest.raises(ValueError, match=r"t.jsonl:2: no summary: the fields \['summary'\] are missing or null"):
        DialogueSummaryData(files={"train": str(write_jsonl(tmp_path / "t.jsonl", [ok, rows[2]]))},
                            summary_fields=["summary"]).read("train")
    skipping = DialogueSummaryData(files={"train": str(train)}, summary_fields=["summary"], on_error="skip")
    with caplog.at_level(logging.WARNING):
        assert len(skipping.read("train")) == 2
    assert skipping.stats["train"]["skipped"] == 3 and skip_logged(caplog, 3, "train.jsonl:2")


def test_multimodal_blank_text_is_masked_and_a_row_with_nothing_names_its_line_or_is_skipped(tmp_path, caplog):
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "f.png")
    rows = [{"text": "so happy", "label": "joy"}, {"text": "so sad", "label": "sadness"},
            {"text": "   ", "image": "f.png", "label": "joy"}, {"text": " ", "label": "sadness"},
            {"text": "no label", "label": None}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    kwargs = {"image": {"image_size": 8, "augment": None}, "text": {"vocab_size": 60, "max_length": 8},
              "modalities": ["text", "image"], "batch_size": 4}
    with pytest.raises(ValueError, match=rf"train.jsonl:4: no modality present .*fill at least one.*{SKIP_RE}"):
        MultimodalData(files={"train": str(train)}, **kwargs).setup(None, ("train",))
    data = MultimodalData(files={"train": str(train)}, on_error="skip", **kwargs)
    with caplog.at_level(logging.WARNING):
        data.setup(None, ("train",))
    assert len(data.dataset("train")) == 3 and data.skipped == {"train": 2}
    assert skip_logged(caplog, 2, "train.jsonl:4")
    batch = data.collate([data.dataset("train")[i] for i in range(3)])
    assert batch["text_mask"].tolist() == [True, True, False]  # whitespace = missing, not an empty "present" text
    with pytest.raises(ValueError, match=r"l.jsonl:2: no label in column 'label' \(null, empty or missing"):
        MultimodalData(files={"train": str(write_jsonl(tmp_path / "l.jsonl", [rows[0], rows[4]]))},
                       **kwargs).setup(None, ("train",))


# ---- 2. truncated audio ------------------------------------------------------------------------
def tone_folder(root: Path, rate: int = 8000) -> Path:
    lines = ["path,label,speaker"]
    for s in range(3):
        for k, label in enumerate(("low", "high") * 2):
            name = f"wav/s{s}_{label}_{k}.wav"
            (root / "wav").mkdir(parents=True, exist_ok=True)
            freq = 300.0 if label == "low" else 900.0
            sf.write(str(root / name), 0.5 * np.sin(2 * np.pi * freq * np.arange(int(0.3 * rate)) / rate), rate)
            lines.append(f"{name},{label},spk{s}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def cut_in_half(path: Path) -> Path:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    return path


def test_truncated_audio_names_the_file_or_is_skipped_and_counted(tmp_path, caplog):
    root = tone_folder(tmp_path / "speech")
    cut = cut_in_half(root / "wav/s1_high_1.wav")
    assert sf.info(str(cut)).frames < 2400  # libsndfile reports the shorter length: the header must be checked
    for fn in (probe_audio, read_audio):
        with pytest.raises(AudioReadError, match=r"s1_high_1.wav: audio file is truncated: its header declares 2400 "
                                                 r"frames but only 1\d{3} are in the file"):
            fn(cut)
    features = {"sample_rate": 8000, "duration": 0.25, "n_mels": 8, "n_fft": 128, "win_length": 128,
                "hop_length": 64}
    kwargs = {"split": "random", "split_ratios": [1.0, 0.0, 0.0], "features": features, "augment": {},
              "batch_size": 4}
    for cached in (False, True):
        with pytest.raises(AudioReadError, match=rf"labels.csv:7: .*s1_high_1.wav: audio file is truncated.*{SKIP_RE}"):
            AudioClassificationData(root=str(root), cache_features=cached, cache_dir=str(tmp_path / "cache"),
                                    **kwargs).setup()
    data = AudioClassificationData(root=str(root), on_error="skip", **kwargs)
    with caplog.at_level(logging.WARNING):
        data.setup()
    assert len(data.dataset("train")) == 11 and data.skipped == {"train": 1}
    assert "skipped 1 of 12" in caplog.text and "s1_high_1.wav: audio file is truncated" in caplog.text
    flac = tmp_path / "cut.flac"
    sf.write(str(flac), np.sin(np.arange(8000) / 5.0) * 0.3, 8000)
    with pytest.raises(AudioReadError, match=r"cut.flac: cannot read audio .*truncated"):
        probe_audio(cut_in_half(flac))


# ---- 3. non-UTF-8 bytes -------------------------------------------------------------------------
def test_non_utf8_byte_names_file_line_and_the_fix(tmp_path):
    fix = r"is not UTF-8; re-save the file as UTF-8"
    csv = tmp_path / "train.csv"
    csv.write_bytes("text,label\ni am happy,joy\nun caf\xe9 tr\xe8s triste,sadness\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"train.csv:3: byte 0xe9 \(column 7\) {fix}"):
        text_data(tmp_path, {"train": str(csv)}).setup(None, ("train",))
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes(b'{"text": "ok", "label": "joy"}\n\n{"text": "caf\xe9", "label": "joy"}\n')
    with pytest.raises(ValueError, match=rf"train.jsonl:3: byte 0xe9 \(column 14\) {fix}"):
        list(read_rows(jsonl))
    lines = tmp_path / "inputs.txt"
    lines.write_bytes(b"first\nsecond \xff\n")
    with pytest.raises(ValueError, match=rf"inputs.txt:2: byte 0xff \(column 8\) {fix}"):
        read_lines(str(lines))
    bom = tmp_path / "bom.csv"
    bom.write_bytes("text,label\ni am glad,joy\n".encode("utf-8-sig"))  # Excel's "CSV UTF-8" is fine
    assert list(read_rows(bom)) == [(2, {"text": "i am glad", "label": "joy"})]


# ---- 4. a JSON file holding one object ----------------------------------------------------------
def test_a_single_json_object_says_a_list_or_jsonl_is_expected(tmp_path):
    single = tmp_path / "train.json"
    single.write_text(json.dumps({"data": good_rows(2)}, indent=2))
    expected = r"train.json holds a single JSON object \(keys \['data'\]\), not rows; expected JSONL \(one JSON " \
               r"object per line\) or a JSON list of objects"
    with pytest.raises(ValueError, match=expected):
        list(read_rows(single))
    with pytest.raises(ValueError, match=expected):
        text_data(tmp_path, {"train": str(single)}).setup(None, ("train",))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": "joy"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: not valid JSON \(.*\); expected JSONL"):
        list(read_rows(broken))
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(good_rows(2), indent=2))
    assert [row["label"] for _, row in read_rows(as_list)] == ["joy", "sadness"]


# ---- 5. images far smaller than image_size ------------------------------------------------------
def test_tiny_image_names_the_path_and_min_image_size_or_is_skipped_and_counted(tmp_path, caplog):
    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for label in CLASSES:
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16)).astype(np.uint8)).save(root / label / f"S{i}_{label}.png")
    tiny = root / "joy" / "S9_tiny.png"
    Image.fromarray(np.zeros((1, 1), dtype=np.uint8)).save(tiny)
    kwargs = {"split": "random", "split_ratios": [1.0, 0.0, 0.0], "image_size": 16, "augment": None}
    with pytest.raises(ImageReadError, match=rf"{tiny}: .*1x1 pixels is smaller than data.min_image_size=8.*"
                                             rf"{SKIP_RE}"):
        ImageClassificationData(root=str(root), **kwargs).setup(None)
    data = ImageClassificationData(root=str(root), on_error="skip", **kwargs)
    with caplog.at_level(logging.WARNING):
        data.setup(None)
    assert len(data.dataset("train")) == 6 and data.skipped_rows == [str(tiny)] and data.skipped == {"train": 1}
    assert "skipped 1 of 7 image(s)" in caplog.text and "data.min_image_size=8" in caplog.text
    ImageClassificationData(root=str(root), min_image_size=0, **kwargs).setup(None)  # 0 = no check
    fer = tmp_path / "fer.csv"
    square = " ".join(["128"] * 256)
    fer.write_text(f"emotion,pixels,Usage\n0,{square},Training\n1,7,Training\n1,{square},Training\n")
    fer_kwargs = {**kwargs, "layout": "fer2013_csv", "class_names": CLASSES}
    with pytest.raises(ValueError, match=rf"fer.csv:3: 1x1 pixels is smaller than data.min_image_size=8.*{SKIP_RE}"):
        ImageClassificationData(root=str(fer), **fer_kwargs).setup(None)
    skipping = ImageClassificationData(root=str(fer), on_error="skip", **fer_kwargs)
    skipping.setup(None)
    assert len(skipping.dataset("train")) == 2 and skipping.skipped_rows == [f"{fer}:3"]
    manifest = write_jsonl(tmp_path / "mm.jsonl", [{"image": str(root / "joy" / "S0_joy.png"), "label": "joy"},
                                                   {"image": str(tiny), "label": "sadness"}])
    with pytest.raises(ValueError, match=r"mm.jsonl:2: .*S9_tiny.png.*smaller than data.min_image_size=8"):
        MultimodalData(files={"train": str(manifest)}, modalities=["image"],
                       image={"image_size": 16, "augment": None}).setup(None, ("train",))


# ---- 6. demo data stays in its cache dir --------------------------------------------------------
def test_demo_never_writes_into_or_scores_a_users_folder(tmp_path):
    mine = tmp_path / "mine"
    write_jsonl(mine / "train.jsonl", good_rows())
    write_jsonl(mine / "validation.jsonl", good_rows())
    before = sorted(p.name for p in mine.iterdir())
    cache = tmp_path / "cache" / "demo" / "text_emotion"
    files = {"train": str(mine / "train.jsonl"), "val": str(mine / "validation.jsonl"),
             "test": str(mine / "test.jsonl")}
    with pytest.raises(ValueError, match=rf"data.demo=true writes and reads demo data only inside data.demo_dir="
                                         rf"{cache}; data.files.train={mine}/train.jsonl, .*data.files.test="
                                         rf"{mine}/test.jsonl point elsewhere: set data.demo=false"):
        text_data(tmp_path, files, demo=True, demo_dir=str(cache)).setup(None)
    with pytest.raises(ValueError, match=r"data.demo=true needs data.demo_dir=<dir>"):
        text_data(tmp_path, files, demo=True).setup(None)
    with pytest.raises(FileNotFoundError, match=rf"data.files.test: file not found: {mine}/test.jsonl"):
        text_data(tmp_path, files, demo=False).setup(None)
    assert sorted(p.name for p in mine.iterdir()) == before and not cache.exists()
    other = {"root": str(mine), "demo": True, "demo_dir": str(cache)}
    for make in (lambda: AudioClassificationData(**other), lambda: ImageClassificationData(**other),
                 lambda: DialogueSummaryData(files=files, demo=True, demo_dir=str(cache)),
                 lambda: MultimodalData(files=files, demo=True, demo_dir=str(cache))):
        with pytest.raises(ValueError, match=r"data.demo=true writes and reads demo data only inside .*set "
                                             r"data.demo=false"):
            make().setup(None)
    assert sorted(p.name for p in mine.iterdir()) == before and not cache.exists()
    inside = {s: str(cache / name) for s, name in (("train", "train.jsonl"), ("val", "validation.jsonl"),
                                                   ("test", "test.jsonl"))}
    demo = text_data(tmp_path, inside, demo=True, demo_dir=str(cache), class_names=None)
    demo.setup(None)
    assert len(demo.dataset("test")) == 300 and sorted(p.name for p in mine.iterdir()) == before
