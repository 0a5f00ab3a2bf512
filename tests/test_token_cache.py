"""Token ids cached on disk by content and memory-mapped (data/token_cache.py), and memory-mapped audio features:
a second set-up does not tokenise, the examples are exactly those of the uncached path, an edited file or another
max_length is a miss, and a damaged entry is rebuilt, never trusted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from emotionsumm.data.dialogue import DialogueSummaryData
from emotionsumm.data.text import TextClassificationData
from emotionsumm.data.token_cache import Ragged, TokenCache

CLASSES = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def demo_split_files(directory: Path, make) -> dict[str, str]:
    """A generated demo corpus' train/validation/test JSONL files."""
    make(directory)
    return {split: str(directory / f"{name}.jsonl") for split, name in
            [("train", "train"), ("val", "validation"), ("test", "test")]}


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> dict[str, str]:
    from emotionsumm.demo.text import make_text_emotion

    return demo_split_files(tmp_path_factory.mktemp("text"), make_text_emotion)


@pytest.fixture(scope="module")
def dialogue_files(tmp_path_factory) -> dict[str, str]:
    from emotionsumm.demo.dialogue import make_dialogues

    return demo_split_files(tmp_path_factory.mktemp("dialogue"), make_dialogues)


@pytest.fixture
def encode_calls(monkeypatch) -> list[int]:
    """How many texts the tokenizer encoded (every call of a fast tokenizer, in any data class)."""
    calls: list[int] = []
    call = PreTrainedTokenizerFast.__call__

    def counting(self, text, *args, **kwargs):
        calls.append(len(text) if isinstance(text, list) else 1)
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerFast, "__call__", counting)
    return calls


def text_data(files: dict[str, str], tmp_path: Path, cached: bool = True, **kwargs) -> TextClassificationData:
    kwargs = {"files": files, "class_names": CLASSES, "vocab_size": 200, "max_length": 16,
              "tokenizer_cache_dir": str(tmp_path / "tok"),
              "token_cache_dir": str(tmp_path / "tokens") if cached else None, **kwargs}
    data = TextClassificationData(**kwargs)
    data.setup()
    return data


def examples(data, split: str) -> list[dict]:
    dataset = data.dataset(split)
    return [dataset[i] for i in range(len(dataset))]


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


# ---- text -------------------------------------------------------------------------------------------
def test_text_second_setup_reads_the_ids_from_the_cache_and_gives_the_uncached_examples(
        text_files, tmp_path, encode_calls):
    first = text_data(text_files, tmp_path)
    assert first.token_cache.misses == 3 and first.token_cache.hits == 0 and len(entries(tmp_path / "tokens")) == 3
    assert sum(encode_calls) == 2400 + 300 + 300
    encode_calls.clear()
    second = text_data(text_files, tmp_path)
    assert encode_calls == [] and second.token_cache.hits == 3 and second.token_cache.misses == 0
    plain = text_data(text_files, tmp_path, cached=False)
    assert sum(encode_calls) == 3000  # the uncached path tokenises every time
    for split in ("train", "val", "test"):
        dataset = second.dataset(split)
        assert isinstance(dataset.ids.values, np.memmap) and isinstance(dataset.ids.offsets, np.memmap)
        assert not isinstance(plain.dataset(split).ids.values, np.memmap)
        got = examples(second, split)
        assert got == examples(plain, split) == examples(first, split)
        assert all(type(ex["input_ids"]) is list and type(ex["label"]) is int for ex in got)
        assert dataset.lengths() == plain.dataset(split).lengths() == [len(ex["input_ids"]) for ex in got]
        assert dataset.labels == plain.dataset(split).labels and dataset.texts == plain.dataset(split).texts
    # the ids are the tokenizer's own, cut to max_length
    text = second.dataset("test").texts[5]
    assert second.dataset("test")[5]["input_ids"] == second.tokenizer(text, truncation=True, max_length=16)["input_ids"]


def test_text_cache_misses_when_a_file_or_max_length_changes(text_files, tmp_path, encode_calls):
    files = {}
    for split, path in text_files.items():
        files[split] = str(tmp_path / Path(path).name)
        Path(files[split]).write_bytes(Path(path).read_bytes())
    text_data(files, tmp_path)
    rows = Path(files["test"]).read_text().splitlines()
    row = json.loads(rows[0])
    row["text"] = "an edited text that is new to the cache"
    Path(files["test"]).write_text("\n".join([json.dumps(row), *rows[1:]]) + "\n")
    encode_calls.clear()
    edited = text_data(files, tmp_path)
    assert edited.token_cache.hits == 2 and edited.token_cache.misses == 1 and encode_calls == [300]
    assert examples(edited, "test") == examples(text_data(files, tmp_path, cached=False), "test")
    encode_calls.clear()
    shorter = text_data(files, tmp_path, max_length=8)
    assert shorter.token_cache.misses == 3 and sum(encode_calls) == 3000
    assert max(shorter.dataset("train").lengths()) == 8 < max(edited.dataset("train").lengths())
    assert len(entries(tmp_path / "tokens")) == 3 + 1 + 3


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_a_damaged_text_cache_entry_is_rebuilt_not_trusted(text_files, tmp_path, encode_calls, damage):
    reference = examples(text_data(text_files, tmp_path), "train")
    train = [p for p in entries(tmp_path / "tokens") if json.loads(p.read_text())["arrays"]["input_ids"]
             ["offsets"][0] == [2401]][0]
    values = train.with_name(train.name[:-len(".json")] + ".input_ids.values.npy")
    if damage == "flip":  # one id changed: same size, same shape
        raw = bytearray(values.read_bytes())
        raw[-4] ^= 0x01
        values.write_bytes(bytes(raw))
    elif damage == "truncate":
        values.write_bytes(values.read_bytes()[:-40])
    elif damage == "delete":
        values.unlink()
    else:
        train.write_text("{not json")
    encode_calls.clear()
    again = text_data(text_files, tmp_path)
    assert again.token_cache.misses == 1 and again.token_cache.hits == 2 and encode_calls == [2400]
    assert examples(again, "train") == reference
    assert text_data(text_files, tmp_path).token_cache.hits == 3  # the rebuilt entry is good


def test_sentence_pairs_keep_their_token_type_ids(tmp_path, encode_calls):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"a": f"first text {i} " * (i % 5 + 1), "b": f"the pair {i} " * (i % 7 + 1),
                                        "label": CLASSES[i % 2]}) + "\n" for i in range(40)))
    kwargs = {"files": {"train": str(path)}, "text_field": "a", "text_pair_field": "b", "class_names": CLASSES[:2]}
    cached, plain = text_data(**kwargs, tmp_path=tmp_path), text_data(**kwargs, tmp_path=tmp_path, cached=False)
    encode_calls.clear()
    again = text_data(**kwargs, tmp_path=tmp_path)
    assert encode_calls == [] and isinstance(again.dataset("train").types.values, np.memmap)
    got = examples(again, "train")
    assert got == examples(plain, "train") == examples(cached, "train")
    assert {1} <= {t for ex in got for t in ex["token_type_ids"]} and all(len(ex["input_ids"]) <= 16 for ex in got)
    batch = again.collate(got[:4])
    assert torch.equal(batch["token_type_ids"], plain.collate(examples(plain, "train")[:4])["token_type_ids"])


def test_predict_inputs_are_not_cached(text_files, tmp_path, encode_calls):
    data = text_data(text_files, tmp_path)
    before = len(entries(tmp_path / "tokens"))
    encode_calls.clear()
    dataset = data.encode_inputs(["i feel fine", "i am so angry"])
    assert encode_calls == [2] and len(entries(tmp_path / "tokens")) == before
    assert dataset[1]["input_ids"] == data.tokenizer("i am so angry", truncation=True, max_length=16)["input_ids"]


# ---- dialogue -----------------------------------------------------------------------------------------
def dialogue_data(files: dict[str, str], tmp_path: Path, cached: bool = True, **kwargs) -> DialogueSummaryData:
    kwargs = {"files": files, "vocab_size": 300, "max_source_length": 48, "max_target_length": 12,
              "summary_fields": ["summary", "summary1", "summary2"], "bucket_by_length": True, "batch_size": 8,
              "tokenizer_cache_dir": str(tmp_path / "tok"),
              "token_cache_dir": str(tmp_path / "tokens") if cached else None, **kwargs}
    data = DialogueSummaryData(**kwargs)
    data.setup()
    return data


def test_dialogue_second_setup_reads_the_ids_from_the_cache_and_gives_the_uncached_examples(
        dialogue_files, tmp_path, encode_calls):
    first = dialogue_data(dialogue_files, tmp_path)
    assert first.token_cache.misses == 3 and first.stats["train"]["source_truncated"] > 0
    encode_calls.clear()
    second = dialogue_data(dialogue_files, tmp_path)
    assert encode_calls == [] and second.token_cache.hits == 3
    plain = dialogue_data(dialogue_files, tmp_path, cached=False)
    assert encode_calls  # the uncached path tokenises
    assert second.stats == plain.stats == first.stats
    assert second.train_batches() == plain.train_batches() == first.train_batches()
    for split in ("train", "val", "test"):
        dataset = second.dataset(split)
        assert isinstance(dataset.sources.values, np.memmap) and isinstance(dataset.targets.values, np.memmap)
        got = examples(second, split)
        assert got == examples(plain, split) == examples(first, split) == list(dataset.examples)
        assert all(type(ex["input_ids"]) is list and type(ex["labels"]) is list for ex in got)
    test = examples(second, "test")
    assert [len(ex["input_ids"]) for ex in test] == sorted(len(ex["input_ids"]) for ex in test)  # shortest first
    assert sorted(ex["index"] for ex in test) == list(range(len(test))) and "index" not in examples(second, "train")[0]
    encode_calls.clear()
    longer = dialogue_data(dialogue_files, tmp_path, max_source_length=64)  # another setting: another key
    assert longer.token_cache.misses == 3 and encode_calls
    assert max(longer.dataset("train").sources.lengths()) == 64 > max(first.dataset("train").sources.lengths()) == 48


def test_dialogue_cache_misses_when_a_file_changes(dialogue_files, tmp_path, encode_calls):
    files = dict(dialogue_files, val=str(tmp_path / "validation.jsonl"))
    rows = Path(dialogue_files["val"]).read_text().splitlines()
    Path(files["val"]).write_text("\n".join(rows) + "\n")
    dialogue_data(files, tmp_path)
    row = json.loads(rows[3])
    row["summary"] = "#Person1# changes the reference."
    Path(files["val"]).write_text("\n".join([*rows[:3], json.dumps(row), *rows[4:]]) + "\n")
    encode_calls.clear()
    edited = dialogue_data(files, tmp_path)
    assert edited.token_cache.misses == 1 and edited.token_cache.hits == 2
    assert examples(edited, "val") == examples(dialogue_data(files, tmp_path, cached=False), "val")


# ---- the cache itself ---------------------------------------------------------------------------------
def test_ragged_round_trip_and_concat():
    lists = [[1, 2, 3], [], [7], [2**31 - 1, 0]]
    ragged = Ragged.concat([Ragged.from_lists(lists[:2]), Ragged.from_lists(lists[2:])])
    assert [ragged[i] for i in range(len(ragged))] == lists and ragged.lengths() == [3, 0, 1, 2]
    assert len(Ragged.concat([])) == 0


def test_token_cache_writes_atomically_and_reads_memory_maps(tmp_path):
    cache = TokenCache(tmp_path)
    built = []

    def build():
        built.append(1)
        return {"ids": Ragged.from_lists([[5, 6], [7]])}, {"cut": 1}

    arrays, meta = cache.get("text", "k", build)
    again, meta_again = TokenCache(tmp_path).get("text", "k", build)
    assert built == [1] and meta == meta_again == {"cut": 1} and isinstance(again["ids"].values, np.memmap)
    assert [again["ids"][i] for i in range(2)] == [[5, 6], [7]]
    assert not list(tmp_path.glob(".tmp-*"))  # no temp file left behind
    assert TokenCache(None).get("text", "k", build)[1] == {"cut": 1} and built == [1, 1]  # no directory: no cache


def test_tokenized_hashes_nothing_without_a_directory_and_caches_no_slow_tokenizer(tmp_path):
    class Unhashable:  # a tokenizer whose identity must not be asked for
        @property
        def backend_tokenizer(self):
            raise AssertionError("hashed without a cache directory")

    built = []

    def build():
        built.append(1)
        return {"ids": Ragged.from_lists([[1]])}, {}

    assert TokenCache(None).tokenized("text", Unhashable(), {}, (["a"],), build)[0]["ids"][0] == [1]
    slow = object()  # no backend_tokenizer: no identity, so nothing is cached
    TokenCache(tmp_path).tokenized("text", slow, {}, (["a"],), build)
    TokenCache(tmp_path).tokenized("text", slow, {}, (["a"],), build)
    assert built == [1, 1, 1] and not list(tmp_path.iterdir())


# ---- audio features ---------------------------------------------------------------------------------------
def test_cached_audio_features_are_memory_mapped_with_the_same_values(tmp_path):
    from .test_audio import data, folder

    root = folder(tmp_path / "data")
    cached = {"cache_features": True, "cache_dir": str(tmp_path / "cache")}
    first = data(root, **cached)
    first.setup()
    second = data(root, **cached)
    second.setup()
    assert second.cache.hits == 24 and second.cache.mapped
    maps = Path("/proc/self/maps").read_text()
    for dataset in (first.dataset("train"), second.dataset("train")):  # a miss is mapped too (read back)
        for path, features in zip(dataset.paths, dataset.features):
            assert str(second.cache._file(path)) in maps
            assert torch.equal(features, second.pipeline.extract(path))
