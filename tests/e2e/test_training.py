"""End-to-end training on CPU: determinism, exact resume after SIGKILL, bad input, every experiment."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException

from emotionsumm.config.core import CONFIG_DIR, PROJECT_ROOT
from emotionsumm.training.checkpoint import CheckpointError, load_checkpoint, policy_weights

from ..conftest import SHARED, TINY, cli, make_cfg, run_train, scalars

SHORT = ["trainer.max_steps=6", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2"]


def test_same_seed_same_result_and_run_dir_contents(tmp_path):
    m1 = run_train(tmp_path / "a", SHORT)
    m2 = run_train(tmp_path / "b", SHORT)
    assert m1 == m2
    w1 = load_checkpoint(tmp_path / "a/checkpoints/last.ckpt")["policy"]
    w2 = load_checkpoint(tmp_path / "b/checkpoints/last.ckpt")["policy"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    m3 = run_train(tmp_path / "c", [*SHORT, "seed=7"])
    assert m3["val/loss"] != m1["val/loss"]
    run = tmp_path / "a"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/acc", "val_raw/acc", "test/acc", "test/macro_f1", "test/weighted_f1", "test/f1_joy"} <= set(metrics)
    assert metrics["step"] == 6
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert {"policy", "ema", "optimizer", "scheduler", "step", "epoch", "rng", "config"} <= set(ckpt)
    assert ckpt["config"]["trainer"]["max_steps"] == 6 and ckpt["data"]["class_names"][1] == "joy"
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "tokenizer/tokenizer.json").is_file() and (run / "confusion_val.png").is_file()
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["packages"]["torch"].startswith("2.") and "git_dirty" in prov and prov["command"]
    assert set(scalars(run, "train/loss")) == set(range(1, 7))
    assert "lr/default" in _tags(run) and "train/grad_norm" in _tags(run)


def _tags(run: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return acc.Tags()["scalars"]


KILL_DRIVER = """
import os, signal, sys
from emotionsumm import train
from emotionsumm.training import checkpoint
write = checkpoint.Checkpointer.write
def write_then_die(self, payload, topk, dropped, **kwargs):
    write(self, payload, topk, dropped, **kwargs)
    if payload["step"] == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.Checkpointer.write = write_then_die
train.main()
"""


def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    # 3 optimizer steps per epoch (5 batches, accumulation 2): the kill at step 4 is mid-epoch,
    # with dropout, EMA, validation every 3 steps and a cosine schedule all in play.
    overrides = [*TINY, "trainer.max_steps=8", "trainer.limit_train_batches=5", "trainer.accumulate_grad_batches=2",
                 "trainer.checkpoint_every_n_steps=4", "trainer.val_every_n_steps=3", "trainer.limit_val_batches=2",
                 "trainer.test_after_fit=false", "ema.decay=0.9"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = cli("train", *overrides, f"hydra.run.dir={full}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    env_cmd = [sys.executable, "-c", KILL_DRIVER, *overrides, f"hydra.run.dir={killed}"]
    proc = subprocess.run(env_cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
                          env={**__import__("os").environ, "KILL_AT_STEP": "4"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert load_checkpoint(killed / "checkpoints/last.ckpt")["step"] == 4
    assert not (killed / "metrics.json").exists()
    proc = cli("train", *overrides, f"hydra.run.dir={killed}", "trainer.resume=auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    a = load_checkpoint(full / "checkpoints/last.ckpt")
    b = load_checkpoint(killed / "checkpoints/last.ckpt")
    assert a["step"] == b["step"] == 8
    for part in ("raw", "ema"):
        wa, wb = policy_weights(a, part), policy_weights(b, part)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), part
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == 8
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    losses_full, losses_resumed = scalars(full, "train/loss"), scalars(killed, "train/loss")
    assert sorted(losses_full) == list(range(1, 9))
    assert losses_resumed == losses_full  # steps 1-4 from the killed run, 5-8 from the resumed one


def test_resume_rejects_a_different_model_and_allows_max_steps(tmp_path):
    run = tmp_path / "run"
    run_train(run, [*SHORT, "trainer.test_after_fit=false"])
    with pytest.raises(CheckpointError, match=r"model.hidden_size: 32 -> 48"):
        run_train(run, [*SHORT, "model.hidden_size=48", "trainer.resume=auto"])
    metrics = run_train(run, ["trainer.max_steps=8", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                              "trainer.resume=auto", "trainer.test_after_fit=false"])
    assert metrics["step"] == 8
    before = load_checkpoint(run / "checkpoints/last.ckpt")
    again = run_train(run, ["trainer.max_steps=8", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                            "trainer.resume=auto", "trainer.test_after_fit=false"])
    assert again["step"] == 8 and again["val/acc"] == metrics["val/acc"]  # a finished run stays finished
    after = load_checkpoint(run / "checkpoints/last.ckpt")
    assert all(torch.equal(before["policy"][k], after["policy"][k]) for k in before["policy"])


def test_corrupt_checkpoint_on_resume_names_the_file_and_never_starts_fresh(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints/last.ckpt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError, match=r"last\.ckpt"):
        run_train(run, [*SHORT, "trainer.resume=auto"])
    assert not (run / "metrics.json").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from emotionsumm.policies.classification import ClassificationPolicy

    calls = {"n": 0}
    forward = ClassificationPolicy.forward

    def nan_after_five(self, batch):
        calls["n"] += 1
        loss = forward(self, batch)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(ClassificationPolicy, "forward", nan_after_five)
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"loss is nan at optimizer step 6 .*last\.ckpt"):
        run_train(run, [*SHORT, "trainer.checkpoint_every_n_steps=4"])
    ckpt = load_checkpoint(run / "checkpoints/last.ckpt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["policy"].values() if v.is_floating_point())


def test_bad_data_inputs_name_file_line_and_key(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=rf"data.files.train: file not found: {missing}"):
        run_train(tmp_path / "r1", [*SHORT, f"data.files.train={missing}", "data.demo=false"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "i am happy", "label": "joy"}\n{"text": "meh", "label": "boredom"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: label 'boredom' is not one of the classes"):
        run_train(tmp_path / "r2", [*SHORT, f"data.files.train={bad}", "data.demo=false"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "i am happy", "label": "joy"}\n')
    with pytest.raises(ValueError, match=r"data.files.val: split 'val' is empty"):
        run_train(tmp_path / "r3", [*SHORT, f"data.files.train={good}", f"data.files.val={empty}", "data.demo=false"])
    with pytest.raises(ValueError, match=r"data.demo=true writes and reads demo data only inside data.demo_dir=.*; "
                                         r"data.files.val=.*empty.jsonl points elsewhere"):
        run_train(tmp_path / "r3b", [*SHORT, f"data.files.val={empty}"])
    with pytest.raises(InstantiationException, match=r"trainer.precision='64' is not allowed"):
        run_train(tmp_path / "r4", [*SHORT, "trainer.precision=64"])


def test_sentence_pairs_from_headerless_tsv(tmp_path):
    rows = ["a man is playing\ta person plays music\t1", "the cat sleeps\ta dog barks loudly\t0"] * 20
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    metrics = run_train(tmp_path / "run", [
        "trainer.max_steps=3", "trainer.test_after_fit=false", "data.demo=false", "data.has_header=false",
        f"data.files.train={tmp_path}/train.tsv", f"data.files.val={tmp_path}/dev.tsv", "data.files.test=null",
        "data.text_field=0", "data.text_pair_field=1", "data.label_field=2", "data.class_names=null"])
    assert 0.0 <= metrics["val/acc"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "run/checkpoints/last.ckpt")
    assert ckpt["data"]["class_names"] == ["0", "1"]
    assert "model.encoder.embeddings.token_type_embeddings.weight" in ckpt["policy"]


EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def write_embedding_manifest(folder: Path, split: str, rows: int = 8) -> Path:
    """A manifest like `predict embeddings_manifest=…` writes: a label and `text_emb` / `audio_emb` rows of
    one .npy per column."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for column in ("text_emb", "audio_emb"):
        np.save(folder / f"{split}_{column}.npy", rng.normal(size=(rows, 8)).astype(np.float32))
    manifest = folder / f"{split}.jsonl"
    manifest.write_text("".join(json.dumps({"label": ["joy", "calm", "anger", "sadness"][i % 4],
                                            "text_emb": f"{split}_text_emb.npy#{i}",
                                            "audio_emb": f"{split}_audio_emb.npy#{i}"}) + "\n"
                                for i in range(rows)))
    return manifest


def stand_ins(experiment: str, tmp_path: Path) -> list[str]:
    """What an experiment for a user's own encoder or corpus gets here: a tiny random encoder saved in
    tmp_path, or GLUE's generated files (MNLI: the task with a test split)."""
    if experiment == "emotion_features_two_stage":  # stage 1's exported embeddings: random ones
        return [f"data.files.{split}={write_embedding_manifest(tmp_path / 'two_stage', split)}"
                for split in ("train", "val", "test")]
    if experiment == "glue" and not (SHARED / "data/glue").is_dir():
        return ["data=glue_mnli", "data.demo=true", f"data.demo_dir={tmp_path / 'glue_demo'}"]
    if experiment == "emotion_audio_ssl":
        from ..test_audio_ssl import save_tiny_ssl

        return [f"model.pretrained={save_tiny_ssl(tmp_path / 'ssl')}"]
    if experiment == "emotion_image_hf":
        from ..test_image_hf import save_tiny_vit

        return [f"model.pretrained={save_tiny_vit(tmp_path / 'vit')}"]
    return []


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_every_experiment(tmp_path, experiment):
    cfg_text = (Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml").read_text()
    if ("dair" in cfg_text or "minilm" in cfg_text or "shared_dir" in cfg_text) and not (SHARED / "data").is_dir():
        pytest.skip(f"{experiment} needs real data in {SHARED}")
    from emotionsumm.train import train

    # small batches, and 8 new tokens (an untrained decoder never says EOS): generation and ROUGE still run,
    # in a quarter of the time (BERT2BERT with 80 tokens of 16 summaries at once: 60 s)
    short = ["policy.max_new_tokens=8", "data.batch_size=4", "data.eval_batch_size=4"] \
        if "override /policy: seq2seq" in cfg_text else []
    metrics = train(make_cfg(tmp_path, [f"experiment={experiment}", "debug=fast", *short,
                                        *stand_ins(experiment, tmp_path)]))
    # evaluated: the test split, or the validation split of data without one (FER2013's training faces)
    assert metrics["step"] == 1 and {"test/acc", "test/rougeL", "val/acc"} & set(metrics)
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_composing_the_config_is_fast_and_imports_no_torch():
    probe = "import sys, emotionsumm.train; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT).returncode == 0
    start = time.perf_counter()
    proc = cli("train", "--cfg", "job", "experiment=emotion_text_dair", "trainer.max_steps=3")
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - start < 5.0  # ~0.5 s here; generous for a loaded CI machine
    assert "max_steps: 3" in proc.stdout and "data/emotion_text/dair/train.jsonl" in proc.stdout
