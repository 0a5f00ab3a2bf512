"""A checkpoint written before the packages by role (its stored config names `emotionsumm.trainer.Trainer`,
`emotionsumm.loggers.…`, `emotionsumm.ema.EMA`…) evaluates, predicts and resumes exactly like today's."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from emotionsumm.config.renames import MOVED_MODULES
from emotionsumm.training.checkpoint import CheckpointError, load_checkpoint

from ..conftest import TINY, cli, run_train

SHORT = ["trainer.max_steps=10", "optimizer.lr=3e-3", "trainer.val_every_n_steps=5", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.test_after_fit=false", "logger=csv"]
OLD = {new: old for old, new in MOVED_MODULES.items()}
TEXTS = "i feel so lonely and hopeless since yesterday\ntoday i am thrilled and cheerful at work\n"


def _old_names(node: Any) -> Any:
    """The config as the code before the move wrote it: every moved `_target_` under its old module."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            module, _, name = value.rpartition(".") if key == "_target_" and isinstance(value, str) else ("", "", "")
            out[key] = f"{OLD[module]}.{name}" if module in OLD else _old_names(value)
        return out
    if isinstance(node, list):
        return [_old_names(item) for item in node]
    return node


def _rewritten(ckpt: Path, dest: Path, convert=_old_names) -> Path:
    payload = torch.load(ckpt, weights_only=True)
    payload["config"] = convert(payload["config"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, dest)
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    run = tmp_path_factory.mktemp("now")
    run_train(run, SHORT)
    new = run / "checkpoints/last.ckpt"
    old = _rewritten(new, tmp_path_factory.mktemp("old") / "checkpoints/last.ckpt")
    stored = torch.load(old, weights_only=True)["config"]
    assert stored["trainer"]["_target_"] == "emotionsumm.trainer.Trainer"
    assert stored["ema"]["_target_"] == "emotionsumm.ema.EMA"
    assert stored["scheduler"]["_target_"] == "emotionsumm.schedulers.cosine_with_warmup"
    assert stored["logger"]["csv"]["_target_"] == "emotionsumm.loggers.CSVLogger"
    return new, old


def test_evaluate_gives_identical_metrics_and_predict_the_same_rows(trained, tmp_path):
    new, old = trained
    outputs = {}
    for name, ckpt in (("new", new), ("old", old)):
        proc = cli("evaluate", f"ckpt={ckpt}", "split=test", f"hydra.run.dir={tmp_path / name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        predicted = cli("predict", f"ckpt={ckpt}", "input=-", stdin=TEXTS)
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics.pop("ckpt") == str(ckpt)
        outputs[name] = (metrics, predicted.stdout)
    assert outputs["old"] == outputs["new"]
    assert outputs["new"][0]["test/acc"] >= 0 and len(outputs["new"][1].splitlines()) == 2


def test_resume_from_an_old_checkpoint_is_the_resume_from_todays(trained, tmp_path, caplog):
    new, old = trained
    more = ["trainer.max_steps=14", "optimizer.lr=3e-3", "trainer.val_every_n_steps=5", "trainer.limit_val_batches=2",
            "trainer.test_after_fit=false", "logger=csv"]
    finals = {}
    for name, ckpt in (("new", new), ("old", old)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            metrics = run_train(tmp_path / name, [*more, f"trainer.resume={ckpt}"])
        assert metrics["step"] == 14
        assert "_target_" not in caplog.text  # stored names are today's: no "changed config" for a target
        finals[name] = (metrics, load_checkpoint(tmp_path / name / "checkpoints/last.ckpt"))
    (m_new, a), (m_old, b) = finals["new"], finals["old"]
    assert m_old == m_new
    for part in ("policy", "optimizer"):
        flat_a, flat_b = _tensors(a[part]), _tensors(b[part])
        assert flat_a.keys() == flat_b.keys() and all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), part
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["ema"]["module"])


def test_an_old_looking_name_that_is_not_in_the_map_is_refused(trained, tmp_path):
    new, _ = trained

    def unknown(config: dict) -> dict:
        return {**config, "trainer": {**config["trainer"], "_target_": "emotionsumm.engine.Trainer"}}

    bad = _rewritten(new, tmp_path / "bad/last.ckpt", unknown)
    with pytest.raises(CheckpointError, match=r"trainer\._target_='emotionsumm\.engine\.Trainer'"):
        load_checkpoint(bad)
    proc = cli("evaluate", f"ckpt={bad}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode != 0 and "emotionsumm.engine.Trainer" in proc.stderr
    assert not (tmp_path / "eval/metrics.json").exists()


def _tensors(node: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(node, torch.Tensor):
        return {prefix: node}
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _tensors(value, f"{prefix}/{key}").items()}
    if isinstance(node, (list, tuple)):
        return {k: v for i, value in enumerate(node) for k, v in _tensors(value, f"{prefix}/{i}").items()}
    return {}


assert TINY  # run_train composes with the TINY overrides
