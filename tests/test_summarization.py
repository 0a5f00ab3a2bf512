"""Dialogue summarization: ROUGE, lead-k, data formats, tokenizer, limits, generation, bad input,
and evaluate/predict/int8 from the checkpoint of a tiny run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from emotionsumm.config.core import PROJECT_ROOT
from emotionsumm.data import tokenizers as toks
from emotionsumm.data.dialogue import LABEL_PAD, DialogueSummaryData, length_buckets
from emotionsumm.metrics.baselines import baseline, lead_k
from emotionsumm.metrics.rouge import pair_scores, rouge_scores, split_sentences

from .conftest import make_cfg, needs_shared

# a tiny BART and short generation: a training step takes milliseconds
TINY_BART = ["experiment=summarization", "model.d_model=32", "model.encoder_layers=1", "model.decoder_layers=1",
             "model.attention_heads=2", "model.ffn_dim=64", "data.vocab_size=300", "data.batch_size=16",
             "data.eval_batch_size=50", "data.max_eval_examples=16", "policy.max_new_tokens=12", "policy.num_beams=2",
             "trainer.progress_bar=false", "trainer.log_every_n_steps=5", "scheduler.warmup_steps=2"]
DIALOGUE = "#Person1#: I need a train ticket to Boston.\n#Person2#: When?\n#Person1#: On Friday, please."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matmuls on a shared 2-core machine run much faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_tiny(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    from emotionsumm.train import train

    return train(make_cfg(run_dir, [*TINY_BART, *overrides]))


def run_cli(module: str, *args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", f"emotionsumm.{module}", *args], input=stdin, capture_output=True,
                          cwd=PROJECT_ROOT, env=env, timeout=300, text=not isinstance(stdin, bytes))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_data(tmp_path: Path, train_rows: list[dict], **kwargs) -> DialogueSummaryData:
    files = {"train": str(write_jsonl(tmp_path / "train.jsonl", train_rows)), "val": None, "test": None}
    files.update(kwargs.pop("files", {}))
    return DialogueSummaryData(files=files, vocab_size=300, **kwargs)


ROWS = [{"fname": f"train_{i}", "dialogue": DIALOGUE.replace("Boston", city), "summary": f"#Person1# goes to {city}."}
        for i, city in enumerate(["Boston", "Denver", "Miami", "Dallas"] * 5)]


# ---- ROUGE and the lead-k baseline ----------------------------------------------------------
def test_rouge_matches_hand_computed_values():
    # reference tokens (stemmed): the cat sat on the mat | it was happi   (9)
    # prediction tokens:          the cat were sit on a mat              (7)
    scores = pair_scores("the cats were sitting on a mat", "The cat sat on the mat. It was happy.")
    assert scores["rouge1"] == pytest.approx(100 * 0.5)  # 4 shared unigrams: P 4/7, R 4/9
    assert scores["rouge2"] == pytest.approx(100 / 7)  # "the cat" only: P 1/6, R 1/8
    assert scores["rougeL"] == pytest.approx(100 * 0.5)  # LCS "the cat on mat"
    # sentence order swapped: LCS over the whole text finds 6 of 9, over sentences (Lsum) all 9
    swapped = pair_scores("It was happy. the cat sat on the mat", "The cat sat on the mat. It was happy.")
    assert swapped["rougeL"] == pytest.approx(100 * 6 / 9) and swapped["rougeLsum"] == pytest.approx(100.0)
    assert split_sentences("Hi there. How are you?\nFine!") == "Hi there.\nHow are you?\nFine!"
    multi = rouge_scores(["a b c", "x y"], [["a b c", "d e f"], ["x y"]])
    assert multi["rouge1"] == pytest.approx(100.0) and multi["rouge1_mean_refs"] == pytest.approx(75.0)
    assert "rouge1_mean_refs" not in rouge_scores(["a b"], ["a b"])


def test_lead_k_takes_the_first_turns_with_speaker_tags():
    dialogue = "#Person1#: a\n\n#Person2#: b\n#Person1#: c\n#Person2#: d"
    assert lead_k(dialogue, 3) == "#Person1#: a\n#Person2#: b\n#Person1#: c"
    assert baseline("lead2")(dialogue) == "#Person1#: a\n#Person2#: b"
    with pytest.raises(ValueError, match=r"baseline='first3' is not allowed; choose lead<k>"):
        baseline("first3")


@needs_shared
@pytest.mark.slow
def test_lead3_reproduces_the_published_dialogsum_test_numbers(tmp_path):
    from emotionsumm.evaluate import evaluate

    cfg = make_cfg(tmp_path, ["baseline=lead3", "experiment=dialogsum", "split=test"], config_name="evaluate")
    metrics = evaluate(cfg)
    assert metrics["examples"] == 500
    assert round(metrics["test/rouge1"], 1) == 27.5 and round(metrics["test/rouge2"], 1) == 7.2
    assert round(metrics["test/rougeL"], 1) == 21.1
    assert {"test/rougeLsum", "test/rouge1_mean_refs", "test/rougeL_mean_refs"} <= set(metrics)
    assert json.loads((tmp_path / "metrics.json").read_text())["test/rougeL"] == metrics["test/rougeL"]
    first = json.loads((tmp_path / "predictions_test.jsonl").read_text().splitlines()[0])
    assert first["id"] == "test_0" and first["prediction"].startswith("#Person1#:") and len(first["references"]) == 3
    # on the validation split the baseline scores the same fixed subset the models are validated on
    val = evaluate(make_cfg(tmp_path / "val", ["baseline=lead3", "experiment=dialogsum", "split=val"],
                            config_name="evaluate"))
    assert val["examples"] == 50
    ids = [json.loads(line)["id"] for line in (tmp_path / "val" / "predictions_val.jsonl").read_text().splitlines()]
    data = instantiate(make_cfg(tmp_path / "data", ["experiment=dialogsum"]).data)
    assert ids == [row.id for row in data.read("val")] and len(set(ids)) == 50


# ---- data ---------------------------------------------------------------------------------
def test_dialogsum_jsonl_and_samsum_json_and_jsonl(tmp_path):
    test_rows = [{"fname": "test_0", "dialogue": DIALOGUE, "summary1": "s one", "summary2": "s two", "summary3": "x"}]
    data = make_data(tmp_path, ROWS, summary_fields=["summary", "summary1", "summary2", "summary3"],
                     files={"test": str(write_jsonl(tmp_path / "test.jsonl", test_rows))})
    data.setup(None)
    batches = data.train_batches()  # length-bucketed: fixed batches of 16 examples' indices
    assert (len(batches), len(data.dataset("train")), data.stats["train"]["rows"]) == (2, 20, 20)
    assert data.batch_size == 16 and sorted(i for b in batches for i in b) == list(range(20))
    assert data.read("test")[0].references == ["s one", "s two", "x"]
    batch = data.collate([data.dataset("test")[0]])
    assert batch["ids"] == ["test_0"] and batch["references"] == [["s one", "s two", "x"]]
    assert batch["dialogues"] == [DIALOGUE]

    samsum = [{"id": "13818513", "dialogue": "Amanda: I baked cookies.\r\nJerry: Sure!", "summary": "Amanda baked."}]
    (tmp_path / "samsum.json").write_text(json.dumps(samsum * 3))
    write_jsonl(tmp_path / "samsum.jsonl", samsum * 3)
    for name in ("samsum.json", "samsum.jsonl"):
        data = DialogueSummaryData(files={"train": str(tmp_path / name)}, summary_fields=["summary"], keep_whole=None)
        rows = data.read("train")
        assert [(r.id, r.dialogue, r.references) for r in rows][0] == (
            "13818513", "Amanda: I baked cookies.\nJerry: Sure!", ["Amanda baked."])


def test_trained_bpe_keeps_speaker_tags_whole_and_round_trips(tmp_path):
    tokenizer = toks.from_json(toks.train_bpe([r["dialogue"] + "\n" + r["summary"] for r in ROWS], vocab_size=300))
    text = "#Person1#: Hello #Person2#, see you in Boston.\n#Person2#: Bye."
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>"
    assert tokens[1] == "#Person1#" and " #Person2#" in tokens and tokens.count("#Person2#") == 1
    assert not any("Person" in t for t in tokens if t not in ("#Person1#", "#Person2#", " #Person2#"))
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    cached = toks.train_bpe_cached([r["dialogue"] for r in ROWS], tmp_path, vocab_size=300)
    assert toks.train_bpe_cached([r["dialogue"] for r in ROWS], tmp_path, vocab_size=300) == cached
    assert len(list(tmp_path.glob("bpe-*.json"))) == 1


def test_truncation_is_honoured_and_counted_and_labels_are_padded_with_minus_100(tmp_path):
    long_row = {"fname": "long", "dialogue": "\n".join(["#Person1#: We talk and talk."] * 40),
                "summary": " ".join(["word"] * 50)}
    data = make_data(tmp_path, [*ROWS, long_row], max_source_length=48, max_target_length=16,
                     bucket_by_length=False)
    data.setup(None, ("train",))
    examples = data.dataset("train").examples
    eos = data.tokenizer.eos_token_id
    assert max(len(ex["input_ids"]) for ex in examples) == 48 and max(len(ex["labels"]) for ex in examples) == 16
    assert all(ex["input_ids"][-1] == eos and ex["labels"][-1] == eos for ex in examples)  # the end token is kept
    assert data.stats["train"]["source_truncated"] == 1 and data.stats["train"]["target_truncated"] == 1
    batch = data.collate([examples[0], examples[-1]])
    short = len(examples[0]["labels"])
    assert batch["labels"].shape == (2, 16) and (batch["labels"][0, short:] == LABEL_PAD).all()
    assert (batch["attention_mask"].sum(1) == torch.tensor([len(examples[0]["input_ids"]), 48])).all()


def test_length_buckets_are_fixed_seeded_and_cover_every_example():
    lengths = [5, 50, 6, 52, 7, 51, 5, 49, 120]
    buckets = length_buckets(lengths, batch_size=2, bucket_width=0.2, seed=0)
    assert sorted(i for batch in buckets for i in batch) == list(range(9))
    sizes = [sorted(lengths[i] for i in batch) for batch in buckets[:-1]]
    assert all(b[-1] <= 1.2 * b[0] + 1 for b in sizes[:3])  # full batches hold similar lengths
    assert length_buckets(lengths, batch_size=2, bucket_width=0.2, seed=0) == buckets


# ---- bad input ------------------------------------------------------------------------------
def test_empty_dialogue_or_summary_names_file_and_line_or_is_skipped_and_counted(tmp_path):
    bad = [*ROWS[:3], {"fname": "x", "dialogue": "  ", "summary": "s"}, {"fname": "y", "dialogue": "d", "summary": ""}]
    with pytest.raises(ValueError, match=r"train.jsonl:4: empty dialogue .*data.on_error=skip"):
        make_data(tmp_path, bad).read("train")
    with pytest.raises(ValueError, match=r"train.jsonl:4: empty summary"):
        make_data(tmp_path, [r for r in bad if r["fname"] != "x"]).read("train")
    data = make_data(tmp_path, bad, on_error="skip")
    assert len(data.read("train")) == 3 and data.stats["train"]["skipped"] == 2


def test_lengths_beyond_the_model_positions_fail_before_training(tmp_path):
    with pytest.raises(InstantiationException, match=r"data.max_source_length=600 exceeds the model's 512 position"):
        train_tiny(tmp_path / "a", ["data.max_source_length=600"])
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "a" / "metrics.json").exists()
    data = make_data(tmp_path, ROWS)
    data.setup(None, ("train",))
    with pytest.raises(ValueError, match=r"policy.max_new_tokens=600 needs 601 decoder positions"):
        tiny_policy(data, max_new_tokens=600)


def test_prediction_input_that_is_not_jsonl_or_text_says_what_was_expected(tmp_path, monkeypatch):
    data = make_data(tmp_path, ROWS)
    data.setup(None, ("train",))
    expected = r"expected JSONL with a 'dialogue' field per line \(data.dialogue_field\), or a plain-text dialogue"
    cases = {"in.csv": b"dialogue,summary\nhi,there\n", "in.txt": b"\x89PNG\r\n\x1a\n\x00\x00",
             "bad.jsonl": b'{"dialogue": "hi"}\n{"dialogue": \n', "nofield.jsonl": b'{"text": "hi"}\n'}
    messages = {"in.csv": "has suffix '.csv'", "in.txt": "is not UTF-8 text",
                "bad.jsonl": "bad.jsonl:2: not valid JSON", "nofield.jsonl": "nofield.jsonl:1: no field 'dialogue'"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=expected) as info:
            data.predict_dataset(str(tmp_path / name))
        assert messages[name] in str(info.value)
    (tmp_path / "ok.txt").write_text(DIALOGUE + "\r\n")
    dataset = data.predict_dataset(str(tmp_path / "ok.txt"))
    assert len(dataset) == 1 and dataset[0]["dialogue"] == DIALOGUE
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe\x00binary")))
    with pytest.raises(ValueError, match=r"input: stdin is not UTF-8 text; expected JSONL"):
        data.predict_dataset("-")


# ---- model, policy, generation -------------------------------------------------------------------
def tiny_policy(data: DialogueSummaryData, **policy_kwargs):
    from emotionsumm.models.seq2seq import BartSummarizer
    from emotionsumm.policies.seq2seq import Seq2SeqPolicy

    torch.manual_seed(0)
    model = BartSummarizer(**data.model_kwargs(), d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2,
                           ffn_dim=64, max_position_embeddings=512)
    return Seq2SeqPolicy(model, data.tokenizer, **policy_kwargs).eval()


def test_generation_honours_max_new_tokens_and_rouge_sees_only_raw_references(tmp_path):
    val = write_jsonl(tmp_path / "v.jsonl", ROWS)
    data = make_data(tmp_path, ROWS, bucket_by_length=False, files={"val": str(val)})
    data.setup(None, ("train", "val"))
    policy = tiny_policy(data, no_repeat_ngram_size=0)
    batch = data.collate([data.dataset("val")[i] for i in range(3)])
    for beams in (1, 3):
        out = policy.generate(batch, max_new_tokens=5, num_beams=beams, min_new_tokens=5)
        assert out.shape == (3, 6) and (out[:, 0] == policy.model.decoder_start_token_id).all()
    inputs, labels = policy.targets(batch["labels"])
    assert (batch["labels"][:, 0] == data.tokenizer.bos_token_id).all()  # <s> summary </s>
    assert torch.equal(labels, batch["labels"][:, 1:]) and (inputs[:, 0] == data.tokenizer.bos_token_id).all()
    shifted = labels[:, :-1] != LABEL_PAD
    assert torch.equal(inputs[:, 1:][shifted], labels[:, :-1][shifted]) and not (inputs == LABEL_PAD).any()
    state = policy.eval_state()
    policy.evaluation_step(batch, state)
    by_id = {r["fname"]: [r["summary"]] for r in ROWS}
    assert state["references"] == [by_id[i] for i in batch["ids"]]  # raw texts, never label ids
    assert set(policy.compute_metrics(state)) >= {"rouge1", "rouge2", "rougeL", "rougeLsum", "loss", "gen_len"}


def test_encoder_gain_is_zero_exactly_when_the_decoder_cannot_see_the_dialogue(tmp_path):
    val = write_jsonl(tmp_path / "v.jsonl", ROWS)
    data = make_data(tmp_path, ROWS, bucket_by_length=False, files={"val": str(val)})
    data.setup(None, ("train", "val"))
    policy = tiny_policy(data).eval()
    batch = data.collate([data.dataset("val")[i] for i in range(4)])  # four cities: four different dialogues

    def gain() -> float:
        state = policy.eval_state()
        policy.evaluation_step(batch, state)
        return policy.compute_metrics(state)["encoder_gain"]

    assert gain() != 0.0
    with torch.no_grad():  # cut every cross-attention: the decoder is a plain language model
        for layer in policy.model.net.model.decoder.layers:
            layer.encoder_attn.out_proj.weight.zero_()
            layer.encoder_attn.out_proj.bias.zero_()
    assert gain() == pytest.approx(0.0, abs=1e-6)


def test_training_loss_projects_only_labelled_positions_and_equals_hugging_face_full_logits(tmp_path):
    rows = [{**row, "summary": row["summary"].replace(".", " and back" * i + ".")} for i, row in enumerate(ROWS[:4])]
    val = write_jsonl(tmp_path / "v.jsonl", rows)
    data = make_data(tmp_path, ROWS, bucket_by_length=False, files={"val": str(val)})
    data.setup(None, ("train", "val"))
    policy = tiny_policy(data, label_smoothing=0.1)
    with torch.no_grad():
        policy.model.net.final_logits_bias.normal_()  # the head's bias must come along
    batch = data.collate([data.dataset("val")[i] for i in range(4)])
    inputs, labels = policy.targets(batch["labels"])
    labelled = labels != LABEL_PAD
    assert not labelled.all()  # summaries of different lengths: padded rows exist
    full = policy.model.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            decoder_input_ids=inputs, use_cache=False).logits
    kept = policy.model(batch["input_ids"], batch["attention_mask"], inputs, labelled)
    assert kept.shape == (int(labelled.sum()), full.size(-1))
    torch.testing.assert_close(kept, full[labelled])
    for reduction in ("mean", "sum"):
        expected = torch.nn.functional.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=LABEL_PAD,
                                                     reduction=reduction, label_smoothing=0.1)
        loss, tokens = policy._loss(batch, reduction=reduction)
        torch.testing.assert_close(loss, expected)
        assert tokens == labelled.sum()


def test_freezing_embeddings_and_first_encoder_layers_until_an_epoch(tmp_path):
    from emotionsumm.models.seq2seq import BartSummarizer
    from emotionsumm.policies.seq2seq import Seq2SeqPolicy
    from emotionsumm.training.optim import param_groups

    data = make_data(tmp_path, ROWS)
    data.setup(None, ("train",))
    model = BartSummarizer(**data.model_kwargs(), d_model=32, encoder_layers=2, decoder_layers=1, attention_heads=2,
                           ffn_dim=64, freeze_embeddings=True, freeze_encoder_layers=1, unfreeze_at_epoch=2)
    policy = Seq2SeqPolicy(model, data.tokenizer)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "net.model.shared.weight" in frozen and "net.model.encoder.embed_positions.weight" in frozen
    assert any(n.startswith("net.model.encoder.layers.0.") for n in frozen)
    assert not any(n.startswith(("net.model.encoder.layers.1.", "net.model.decoder.layers.")) for n in frozen)
    assert policy.on_epoch_start(1) is False and policy.on_epoch_start(2) is True
    assert all(p.requires_grad for p in model.parameters())
    groups = {g["name"]: g for g in param_groups(policy, 0.01, {"encoder": 1e-4, "decoder": 3e-4})}
    assert groups["encoder"]["lr"] == 1e-4 and groups["decoder"]["lr"] == 3e-4 and "default_no_decay" in groups
    with pytest.raises(ValueError, match=r"model.freeze_encoder_layers=3 is out of range; allowed: \[0, 2\]"):
        BartSummarizer(**data.model_kwargs(), d_model=32, encoder_layers=2, decoder_layers=1, attention_heads=2,
                       ffn_dim=64, freeze_encoder_layers=3)


def test_quantised_model_loads_and_generates(tmp_path):
    from emotionsumm.models.quantize import quantize

    data = make_data(tmp_path, ROWS, bucket_by_length=False)
    data.setup(None, ("train",))
    policy = tiny_policy(data)
    batch = data.collate([data.dataset("train")[i] for i in range(2)])
    quantized = quantize(policy, "int8")
    kinds = {type(m).__name__ for m in quantized.modules()}
    assert "Linear" in kinds and quantized.model.net.lm_head.__class__.__module__.startswith("torch.ao.nn.quantized")
    assert len(quantized.summarize(batch, max_new_tokens=4)) == 2
    assert quantize(policy, None) is policy
    with pytest.raises(ValueError, match=r"quantize='int4' is not allowed"):
        quantize(policy, "int4")


# ---- end to end: train, evaluate, predict ---------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("summ")
    metrics = train_tiny(run, ["trainer.max_steps=20", "trainer.max_epochs=1", "trainer.limit_val_batches=1"])
    return run, metrics


@pytest.mark.slow
def test_training_writes_rouge_predictions_and_tensorboard_samples(trained):
    run, metrics = trained
    assert metrics["step"] == 20
    assert {"val/rougeL", "val_raw/rougeL", "test/rouge1", "test/rougeLsum", "test/rougeL_mean_refs",
            "test_raw/rouge2", "best/val/rougeL"} <= set(metrics)
    predictions = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    assert len(predictions) == 200 and predictions[0]["id"] == "test_0" and len(predictions[0]["references"]) == 2
    assert len((run / "predictions_val.jsonl").read_text().splitlines()) == 16
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert isinstance(ckpt["data"]["tokenizer_json"], str) and '"#Person1#"' in ckpt["data"]["tokenizer_json"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "val/samples/text_summary" in acc.Tags()["tensors"] and "val/rougeL" in acc.Tags()["scalars"]


@pytest.mark.slow
def test_evaluate_and_predict_from_the_checkpoint_alone(trained, tmp_path):
    from emotionsumm.evaluate import evaluate
    from emotionsumm.predict import predict

    run, train_metrics = trained
    ckpt = sorted((run / "checkpoints").glob("epoch*.ckpt"))[-1]  # the best one, which training tested
    proc = run_cli("evaluate", f"ckpt={ckpt}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout)
    for key in ("test/rouge1", "test/rouge2", "test/rougeL", "test/rougeLsum", "test/rougeL_mean_refs"):
        assert metrics[key] == pytest.approx(train_metrics[key])
    int8 = evaluate(make_cfg(tmp_path / "int8", [f"ckpt={ckpt}", "split=test", "quantize=int8"], "evaluate"))
    assert int8["quantize"] == "int8" and 0.0 <= int8["test/rougeL"] <= 100.0

    proc = run_cli("predict", f"ckpt={ckpt}", "input=-", stdin=DIALOGUE + "\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.strip().splitlines()) == 1 and proc.stdout.strip()
    infile = write_jsonl(tmp_path / "in.jsonl", [{"dialogue": DIALOGUE}, {"dialogue": DIALOGUE.replace("a", "o")}])
    rows = predict(make_cfg(tmp_path / "p", [f"ckpt={ckpt}", f"input={infile}", "quantize=int8"], "predict"))
    assert len(rows) == 2 and all(row and "\n" not in row for row in rows)
