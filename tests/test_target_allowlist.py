"""A checkpoint's config is data, never code: only allow-listed `_target_`s are built from it."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from emotionsumm import checkpoint, stored_config
from emotionsumm.checkpoint import Checkpointer, CheckpointError
from emotionsumm.config import CONFIG_DIR
from emotionsumm.io import TMP_PREFIX, DiskFullError, atomic_write_text
from emotionsumm.target_allowlist import UntrustedConfigError, check_config, conf_targets, refusal

from .conftest import cli, make_cfg, run_train

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained")
    run_train(run, ["trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"])
    return run / "checkpoints" / "last.ckpt"


class Scene:
    """Files a payload would touch, all inside tmp_path; `untouched()` says nothing happened."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.victim = tmp_path / "victim.txt"
        self.victim.write_text("precious")
        self.copy = tmp_path / "copy.txt"
        self.marker = tmp_path / "marker"
        mods = tmp_path / "mods"
        mods.mkdir()
        for module in ("evil_on_import", "emotionsumm_lookalike"):
            (mods / f"{module}.py").write_text(f"from pathlib import Path\nPath({str(self.marker)!r}).touch()\n"
                                               "def func(**kwargs):\n    return None\n")
        monkeypatch.syspath_prepend(str(mods))
        for module in ("evil_on_import", "emotionsumm_lookalike"):
            sys.modules.pop(module, None)  # imported by an earlier control test

    def untouched(self) -> bool:
        intact = self.victim.is_file() and self.victim.read_text() == "precious"
        return (intact and not self.copy.exists() and not self.marker.exists()
                and not {"evil_on_import", "emotionsumm_lookalike"} & set(sys.modules))


def _set(node: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


# (id, where in the config, value, key path named by the error, offending target, run by evaluate unguarded:
# positions evaluate builds, minus what Hydra 1.3.8's own best-effort blocklist stops (subprocess, os.system,
# os.remove); it lets open, copyfile, imports and emotionsumm's file writers through)
PAYLOADS: list[tuple[str, str, Callable[[Scene], object], str, object, bool]] = [
    ("open-w-in-data", "data.vocab_file", lambda s: {"_target_": "builtins.open", "file": str(s.victim), "mode": "w"},
     "data.vocab_file._target_", "builtins.open", True),
    ("copyfile-in-model", "model.encoder", lambda s: {"_target_": "shutil.copyfile", "src": str(s.victim),
                                                      "dst": str(s.copy)},
     "model.encoder._target_", "shutil.copyfile", True),
    ("subprocess-in-list", "data.augment",
     lambda s: [1, {"_target_": "subprocess.run", "args": ["touch", str(s.marker)]}],
     "data.augment[1]._target_", "subprocess.run", False),
    ("os-system-in-args", "policy._args_", lambda s: [{"_target_": "os.system", "_args_": [f"touch {s.marker}"]}],
     "policy._args_[0]._target_", "os.system", False),
    ("partial-top-level", "evil", lambda s: {"_target_": "shutil.copyfile", "_partial_": True, "src": str(s.victim)},
     "evil._target_", "shutil.copyfile", False),
    ("import-any-module", "model._target_", lambda s: "evil_on_import.func",
     "model._target_", "evil_on_import.func", True),
    ("emotionsumm-lookalike", "data.reader", lambda s: {"_target_": "emotionsumm_lookalike.func"},
     "data.reader._target_", "emotionsumm_lookalike.func", True),
    ("emotionsumm-reexport", "data.cleanup", lambda s: {"_target_": "emotionsumm.checkpoint.os.remove",
                                                        "_args_": [str(s.victim)]},
     "data.cleanup._target_", "emotionsumm.checkpoint.os.remove", False),
    ("emotionsumm-file-writer", "model.notes", lambda s: {"_target_": "emotionsumm.io.atomic_write_text",
                                                          "text": "pwned", "path": str(s.victim)},
     "model.notes._target_", "emotionsumm.io.atomic_write_text", True),
    ("non-string-target", "model._target_", lambda s: ["builtins.open"], "model._target_", ["builtins.open"], False),
]


def _tampered(ckpt: Path, tmp_path: Path, where: str, value: object) -> Path:
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    _set(payload["config"], where, value)
    out = tmp_path / "shared.ckpt"
    torch.save(payload, out)
    return out


@pytest.mark.parametrize(("where", "make", "key", "target", "live"), [p[1:] for p in PAYLOADS],
                         ids=[p[0] for p in PAYLOADS])
@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_naming_code(ckpt, tmp_path, monkeypatch, where, make, key, target, live):
    from emotionsumm.evaluate import evaluate

    scene = Scene(tmp_path, monkeypatch)
    bad = _tampered(ckpt, tmp_path, where, make(scene))
    with pytest.raises(CheckpointError) as info:
        evaluate(make_cfg(tmp_path / "eval", [f"ckpt={bad}"], config_name="evaluate"))
    message = str(info.value)
    assert f"{key}={target!r}" in message and "_target_" in message
    assert str(bad) in message and "nothing was run" in message
    assert scene.untouched()
    assert not (tmp_path / "eval" / "metrics.json").exists()


@pytest.mark.parametrize(("where", "make", "key", "target", "live"), [p[1:] for p in PAYLOADS if p[-1]],
                         ids=[p[0] for p in PAYLOADS if p[-1]])
@pytest.mark.slow
def test_without_the_check_the_payloads_would_run(ckpt, tmp_path, monkeypatch, where, make, key, target, live):
    """Control: each position above is one evaluate really builds, so the refusals are what save the files."""
    from emotionsumm.runtime import load_for_inference

    scene = Scene(tmp_path, monkeypatch)
    bad = _tampered(ckpt, tmp_path, where, make(scene))
    monkeypatch.setattr(checkpoint, "check_config", lambda config: None)
    monkeypatch.setattr(stored_config, "check_roles", lambda config: None)  # the second layer: what may be nested
    with pytest.raises(Exception):  # noqa: B017 - the payload runs, then the real class rejects its kwarg
        load_for_inference(str(bad))
    assert not scene.untouched()


@pytest.mark.slow
def test_evaluate_cli_refuses_and_exits_non_zero(ckpt, tmp_path, monkeypatch):
    scene = Scene(tmp_path, monkeypatch)
    bad = _tampered(ckpt, tmp_path, "model.encoder",
                    {"_target_": "builtins.open", "file": str(scene.victim), "mode": "w"})
    proc = cli("evaluate", f"ckpt={bad}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode != 0
    assert "model.encoder._target_='builtins.open'" in proc.stderr, proc.stderr[-3000:]
    assert scene.untouched()


@pytest.mark.slow
def test_resume_refuses_such_a_checkpoint(ckpt, tmp_path, monkeypatch):
    scene = Scene(tmp_path, monkeypatch)
    payload = [{"_target_": "subprocess.run", "args": ["touch", str(scene.marker)]}]
    bad = _tampered(ckpt, tmp_path, "data.augment", payload)
    with pytest.raises(CheckpointError, match=r"trainer\.resume: .*data\.augment\[0\]\._target_='subprocess\.run'"):
        run_train(tmp_path / "run", [f"trainer.resume={bad}", "trainer.max_steps=3"])
    assert scene.untouched()


@pytest.mark.slow
def test_interpolations_in_a_stored_config_are_refused(ckpt, tmp_path):
    bad = _tampered(ckpt, tmp_path, "data.vocab_size", "${oc.env:HOME}")
    with pytest.raises(CheckpointError, match=r"data\.vocab_size='\$\{oc\.env:HOME\}' is an interpolation"):
        checkpoint.load_checkpoint(bad)
    with pytest.raises(UntrustedConfigError, match="interpolation"):
        check_config({"data": {"${run_stamp:}": 1}})


@pytest.mark.slow
def test_the_untouched_checkpoint_still_evaluates(ckpt, tmp_path):
    from emotionsumm.evaluate import evaluate

    metrics = evaluate(make_cfg(tmp_path, [f"ckpt={ckpt}"], config_name="evaluate"))
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.parametrize("target", [
    "emotionsumm.runtime.instantiate", "emotionsumm.checkpoint.os", "emotionsumm.trainer.Trainer.__init__",
    "emotionsumm.runtime.write_json", "emotionsumm", "emotionsumm.nope.Thing", "emotionsumm.models.text.nn.Linear",
    "torch.load", "", 3, None,
])
def test_refused_targets(target):
    assert refusal(target) is not None


@pytest.mark.parametrize("target", ["emotionsumm.checkpoint.Checkpointer", "emotionsumm.models.text.TextClassifier",
                                    "torch.optim.AdamW", "emotionsumm.schedulers.cosine_with_warmup"])
def test_allowed_targets(target):
    assert refusal(target) is None


def test_every_emotionsumm_target_conf_names_is_an_emotionsumm_class_or_function():
    from emotionsumm.target_allowlist import _emotionsumm_object

    assert {"torch.optim.AdamW", "emotionsumm.models.text.TextClassifier", "emotionsumm.sweep.SweepCallback"} \
        <= conf_targets()
    for target in sorted(t for t in conf_targets() if t.startswith("emotionsumm.")):
        obj = _emotionsumm_object(target)
        assert callable(obj) and obj.__module__.startswith("emotionsumm."), target


def test_conf_scan_keeps_hydra_settings_to_emotionsumm_targets(tmp_path):
    (tmp_path / "hydra").mkdir()
    (tmp_path / "hydra/default.yaml").write_text(
        "callbacks:\n  x: {_target_: hydra_plugins.x.Callback}\n  y: {_target_: emotionsumm.sweep.SweepCallback}\n")
    (tmp_path / "launcher").mkdir()
    (tmp_path / "launcher/a.yaml").write_text("hydra:\n  launcher: {_target_: hydra_plugins.l.Launcher}\n")
    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer/b.yaml").write_text("_target_: torch.optim.SGD\nextra: [{_target_: pkg.mod.Thing}]\n")
    assert conf_targets(str(tmp_path)) == {"emotionsumm.sweep.SweepCallback", "torch.optim.SGD", "pkg.mod.Thing"}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_passes_the_check(experiment, tmp_path):
    cfg = make_cfg(tmp_path, [f"experiment={experiment}"])
    stored = OmegaConf.to_container(cfg, resolve=True)  # what the trainer stores in its checkpoints
    check_config(stored)
    assert stored["model"]["_target_"] and stored["data"]["_target_"]


# ---- disk full while saving ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code):
    saver = Checkpointer(tmp_path, monitor="val/acc")
    saver.write({"step": 1, "config": {}}, None, [])
    last = tmp_path / checkpoint.LAST
    before = last.read_bytes()

    def full_disk(obj, fh):
        fh.write(b"x" * 4096)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError) as info:
        saver.write({"step": 2, "config": {}}, None, [])
    assert str(info.value).endswith(f"{os.strerror(code).lower()} while writing {last}; "
                                    f"the previous checkpoint {last} is intact")
    assert info.value.errno == code
    assert last.read_bytes() == before
    assert not list(tmp_path.glob(TMP_PREFIX + "*"))


def test_disk_full_on_a_new_file_says_none_existed(tmp_path, monkeypatch):
    def fsync_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync_full)  # delayed allocation / NFS report it at fsync
    target = tmp_path / "metrics.json"
    with pytest.raises(DiskFullError, match=f"while writing {target}; no previous file existed$"):
        atomic_write_text("{}", target)
    assert list(tmp_path.iterdir()) == []
