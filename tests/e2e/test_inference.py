"""evaluate and predict from a checkpoint alone, through their command lines."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from emotionsumm.config.builders import load_for_inference

from ..conftest import cli, run_train

TEXTS = ["i feel so lonely and hopeless since yesterday", "today i am thrilled and cheerful at work"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained")
    metrics = run_train(run, ["trainer.max_epochs=2", "trainer.limit_val_batches=2", "optimizer.lr=3e-3",
                              "model.hidden_size=64", "model.intermediate_size=128"])
    return run, metrics


def test_evaluate_reproduces_test_metrics_of_training(trained, tmp_path):
    run, train_metrics = trained
    out = tmp_path / "eval"
    proc = cli("evaluate", f"ckpt={run}/checkpoints/last.ckpt", "split=test", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(proc.stdout)
    best = sorted((run / "checkpoints").glob("epoch*.ckpt"))[-1]
    proc = cli("evaluate", f"ckpt={best}", "split=test", f"hydra.run.dir={tmp_path / 'best'}")
    best_metrics = json.loads((tmp_path / "best/metrics.json").read_text())
    assert best_metrics["test/acc"] == pytest.approx(train_metrics["test/acc"])  # training tested the best ckpt
    proc = cli("evaluate", f"ckpt={best}", "split=test", "weights=raw", f"hydra.run.dir={tmp_path / 'raw'}")
    raw = json.loads((tmp_path / "raw/metrics.json").read_text())
    assert raw["test/acc"] == pytest.approx(train_metrics["test_raw/acc"])
    assert train_metrics["test/acc"] > 0.5  # 6 classes: chance is 0.17


def test_predict_from_stdin_and_file_prints_label_and_probability(trained, tmp_path):
    run, _ = trained
    ckpt = f"{run}/checkpoints/last.ckpt"
    proc = cli("predict", f"ckpt={ckpt}", "input=-", stdin="\n".join(TEXTS) + "\n\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert len(rows) == 2 and all(0.0 < float(p) <= 1.0 for _, p in rows)
    _, data, policy = load_for_inference(ckpt)
    batch = data.collate([data.encode_inputs(TEXTS)[i] for i in range(2)])
    probs = policy.predict_proba(batch)
    expected = [policy.class_names[i] for i in probs.argmax(-1).tolist()]
    assert [label for label, _ in rows] == expected
    assert [float(p) for _, p in rows] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-4)
    assert expected == ["sadness", "joy"]
    infile = tmp_path / "in.txt"
    infile.write_text("\n".join(TEXTS))
    emb = tmp_path / "emb.npy"
    proc_file = cli("predict", f"ckpt={ckpt}", f"input={infile}", "export_embeddings=true", f"embeddings_path={emb}")
    assert proc_file.stdout == proc.stdout
    import numpy as np

    features = policy.model.features(batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(np.load(emb), features.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_inference_uses_ema_unless_raw(trained):
    run, _ = trained
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    _, _, ema_policy = load_for_inference(str(run / "checkpoints/last.ckpt"))
    _, _, raw_policy = load_for_inference(str(run / "checkpoints/last.ckpt"), weights="raw")
    key = "model.head.1.weight"
    assert torch.equal(ema_policy.state_dict()[key], ckpt["ema"]["module"][key])
    assert torch.equal(raw_policy.state_dict()[key], ckpt["policy"][key])
    assert not torch.equal(ckpt["ema"]["module"][key], ckpt["policy"][key])


def test_inference_errors_name_the_input(trained, tmp_path):
    run, _ = trained
    proc = cli("predict", f"ckpt={run}/checkpoints/last.ckpt", f"input={tmp_path}/missing.txt")
    assert proc.returncode != 0 and f"input: file not found: {tmp_path}/missing.txt" in proc.stderr
    proc = cli("evaluate", f"ckpt={tmp_path}/nope.ckpt")
    assert proc.returncode != 0 and f"ckpt: checkpoint not found: {tmp_path}/nope.ckpt" in proc.stderr


def test_evaluate_a_demo_checkpoint_on_your_own_file(trained, tmp_path):
    run, _ = trained
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"text": t, "label": label}) + "\n"
                            for t, label in zip(TEXTS * 3, ["sadness", "joy"] * 3)))
    _, data, _ = load_for_inference(f"{run}/checkpoints/last.ckpt", data_overrides=OmegaConf.create(
        {"files": {"test": str(mine)}}), splits=("test",))
    assert not data.demo and len(data.dataset("test")) == 6  # the user's rows, never demo data
    assert mine.read_text().count("\n") == 6 and sorted(p.name for p in tmp_path.iterdir()) == ["mine.jsonl"]
