"""A checkpoint is data: nothing it holds makes evaluate, predict or resume touch a file outside the run.

The allow-list (test_target_allowlist.py) refuses code by name; these tests cover what passes it: the top-k
ranking's file names, allowed classes with side effects nested in the model/data config, and the data's
write paths (demo_dir, caches) and read paths.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from emotionsumm.config.stored import StoredConfigError, check_roles, inference_config
from emotionsumm.training.checkpoint import Checkpointer, CheckpointError

from .conftest import make_cfg, run_train

NAME = "epoch000-step0000002-val_acc_0.5000.ckpt"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained")
    run_train(run, ["trainer.max_steps=4", "trainer.val_every_n_steps=2", "trainer.limit_val_batches=1",
                    "trainer.limit_test_batches=1", "logger=csv"])
    return run / "checkpoints" / "last.ckpt"


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    return victim


@pytest.mark.parametrize("name", ["/abs/path.txt", "../../victim/precious.txt", "last.ckpt", "x.ckpt",
                                  NAME + "/../../precious.txt", 3])
def test_a_ranking_naming_any_other_file_is_refused_on_load(tmp_path, name):
    checkpointer = Checkpointer(tmp_path / "checkpoints", "val/acc", "max", save_top_k=1)
    with pytest.raises(CheckpointError, match=r"callbacks\.checkpointer\.best.*nothing was deleted"):
        checkpointer.load_state_dict({"best": [[0.9, NAME], [-1.0, name]], "monitor": "val/acc", "mode": "max"})
    assert checkpointer.best == []


def test_a_ranking_of_generated_names_loads(tmp_path):
    checkpointer = Checkpointer(tmp_path, "val/loss", "min", save_top_k=2)
    other = "epoch001-step0000010-val_loss_-0.1250.ckpt"
    checkpointer.load_state_dict({"best": [[0.5, NAME], [-0.125, other]], "monitor": "val/loss", "mode": "min"})
    assert checkpointer.best == [(0.5, NAME), (-0.125, other)]


def test_the_checkpointer_deletes_only_names_it_generates(tmp_path):
    victim = _victim(tmp_path)
    checkpointer = Checkpointer(tmp_path / "checkpoints", "val/acc", "max", save_top_k=1)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / NAME).write_text("old")
    checkpointer.write({"x": torch.zeros(1)}, None, [NAME, "../victim/precious.txt", str(victim)])
    assert not (tmp_path / "checkpoints" / NAME).exists()
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("where", ["/abs", "../../../victim/precious.txt"])
@pytest.mark.slow
def test_resume_from_a_crafted_ranking_deletes_nothing(ckpt, tmp_path, where):
    victim = _victim(tmp_path)
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    payload["callbacks"]["checkpointer"]["best"].append([-1e9, str(victim) if where == "/abs" else where])
    crafted = tmp_path / "crafted.ckpt"
    torch.save(payload, crafted)
    with pytest.raises(CheckpointError, match="not a checkpoint file name emotionsumm writes"):
        run_train(tmp_path / "run", [f"trainer.resume={crafted}", "trainer.max_steps=8",
                                     "trainer.val_every_n_steps=2", "trainer.limit_val_batches=1"])
    assert victim.read_text() == "precious"
    assert not (tmp_path / "run" / "checkpoints").exists()


def _stored(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["config"]


@pytest.mark.parametrize(("node", "target"), [
    ("model", "emotionsumm.tracking.loggers.CSVLogger"), ("data", "emotionsumm.tracking.loggers.CSVLogger"),
    ("policy", "emotionsumm.tracking.mlflow_logger.MLflowLogger"), ("data", "emotionsumm.models.text.TextClassifier"),
])
def test_a_nested_object_with_side_effects_is_never_built(ckpt, tmp_path, node, target):
    stored = _stored(ckpt)
    stored[node]["tracker"] = {"_target_": target, "run_dir": str(tmp_path / "victim")}
    with pytest.raises(StoredConfigError, match=rf"{node}\.tracker\._target_='{target}'"):
        check_roles(stored)
    assert not (tmp_path / "victim").exists()


@pytest.mark.parametrize(("node", "target", "kind"), [
    ("model", "emotionsumm.tracking.loggers.CSVLogger", "torch.nn.Module"),
    ("policy", "emotionsumm.data.text.TextClassificationData", "torch.nn.Module"),
    ("data", "emotionsumm.models.text.TextClassifier", "not a data class"),
])
def test_each_rebuilt_node_must_name_its_kind_of_class(ckpt, node, target, kind):
    stored = _stored(ckpt)
    stored[node]["_target_"] = target
    with pytest.raises(StoredConfigError, match=kind):
        check_roles(stored)


def test_a_fusion_models_encoders_are_modules_and_allowed():
    stored = {"model": {"_target_": "emotionsumm.models.fusion.FusionClassifier",
                        "encoders": {"text": {"_target_": "emotionsumm.models.text.TextClassifier"}}},
              "policy": {"_target_": "emotionsumm.policies.classification.ClassificationPolicy"},
              "data": {"_target_": "emotionsumm.data.multimodal.MultimodalData"}}
    check_roles(stored)


def test_write_paths_go_under_the_commands_cache_and_only_model_policy_data_are_kept(ckpt, tmp_path, caplog):
    stored = _stored(ckpt)
    old_cache = stored["paths"]["cache_dir"]
    stored["data"]["demo_dir"] = str(tmp_path / "victim")
    stored["data"]["files"] = {"train": str(tmp_path / "victim" / "train.jsonl"), "val": None,
                               "test": str(tmp_path / "victim" / "sub" / "test.jsonl")}
    assert stored["data"]["tokenizer_cache_dir"] == f"{old_cache}/tokenizers"
    cfg = inference_config(stored, tmp_path / "cache")
    assert set(cfg) == {"model", "policy", "data"}
    assert cfg.data.tokenizer_cache_dir == str(tmp_path / "cache" / "tokenizers")  # same layout as the run's
    demo = tmp_path / "cache" / "checkpoint" / "data.demo_dir"
    assert cfg.data.demo_dir == str(demo)
    assert cfg.data.files == {"train": str(demo / "train.jsonl"), "val": None, "test": str(demo / "sub/test.jsonl")}

    stored["data"]["demo"] = False
    stored["data"]["files"]["test"] = "/some/where/test.jsonl"
    with caplog.at_level(logging.INFO, logger="emotionsumm.config.stored"):
        cfg = inference_config(stored, tmp_path / "cache")
    assert cfg.data.files.test == "/some/where/test.jsonl"  # read, never written
    assert "reading data.files.test=/some/where/test.jsonl as the checkpoint's config names it (read-only" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emotionsumm.config.stored"):
        cfg = inference_config(stored, tmp_path / "cache", OmegaConf.create({"files": {"test": "mine.jsonl"}}))
    assert cfg.data.files.test == "mine.jsonl" and "data.files" not in caplog.text


@pytest.mark.slow
def test_evaluate_writes_demo_data_and_caches_under_its_own_cache_only(ckpt, tmp_path):
    from emotionsumm.evaluate import evaluate

    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    data = payload["config"]["data"]
    data["demo_dir"], data["tokenizer_cache_dir"] = str(victim), str(victim / "tokenizers")
    data["token_cache_dir"] = str(victim / "tokens")
    data["files"] = {split: str(victim / Path(path).name) for split, path in data["files"].items()}
    payload.pop("data")  # no stored tokenizer: the data trains one and caches it
    crafted = tmp_path / "crafted.ckpt"
    torch.save(payload, crafted)
    cache = tmp_path / "cache"
    (tmp_path / "eval").mkdir()
    metrics = evaluate(make_cfg(tmp_path / "eval", [f"ckpt={crafted}", f"paths.cache_dir={cache}",
                                                    "progress_bar=false"], config_name="evaluate"))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert list(victim.iterdir()) == []
    assert (cache / "checkpoint" / "data.demo_dir" / "test.jsonl").is_file()
    assert list((cache / "checkpoint" / "data.tokenizer_cache_dir").glob("*.json"))
    assert list((cache / "checkpoint" / "data.token_cache_dir").glob("text-*.json"))  # the test split's ids
