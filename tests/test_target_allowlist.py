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

from emotionsumm.config import stored
from emotionsumm.config.core import CONFIG_DIR
from emotionsumm.config.trust import SHIPPED, Trust, UntrustedConfigError, check_config, conf_targets, refusal
from emotionsumm.runs.atomic import TMP_PREFIX, DiskFullError, atomic_write_text
from emotionsumm.training import checkpoint
from emotionsumm.training.checkpoint import Checkpointer, CheckpointError

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
    ("emotionsumm-reexport", "data.cleanup", lambda s: {"_target_": "emotionsumm.training.checkpoint.os.remove",
                                                        "_args_": [str(s.victim)]},
     "data.cleanup._target_", "emotionsumm.training.checkpoint.os.remove", False),
    ("emotionsumm-file-writer", "model.notes", lambda s: {"_target_": "emotionsumm.runs.atomic.atomic_write_text",
                                                          "text": "pwned", "path": str(s.victim)},
     "model.notes._target_", "emotionsumm.runs.atomic.atomic_write_text", True),
    ("non-string-target", "model._target_", lambda s: ["builtins.open"], "model._target_", ["builtins.open"], False),
]


def _tampered(ckpt: Path, tmp_path: Path, where: str, value: object) -> Path:
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    _set(payload["config"], where, value)
    out = tmp_path / "shared.ckpt"
    torch.save(payload, out)
    return out


@pytest.mark.parametrize("trusting", [[], ["trust=[mylab,mylab_tools.io]"]], ids=["no-trust", "lab-trusted"])
@pytest.mark.parametrize(("where", "make", "key", "target", "live"), [p[1:] for p in PAYLOADS],
                         ids=[p[0] for p in PAYLOADS])
@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_naming_code(ckpt, tmp_path, monkeypatch, where, make, key, target, live,
                                                   trusting):
    from emotionsumm.evaluate import evaluate

    scene = Scene(tmp_path, monkeypatch)
    bad = _tampered(ckpt, tmp_path, where, make(scene))
    with pytest.raises(CheckpointError) as info:
        evaluate(make_cfg(tmp_path / "eval", [f"ckpt={bad}", *trusting], config_name="evaluate"))
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
    from emotionsumm.config.builders import load_for_inference

    scene = Scene(tmp_path, monkeypatch)
    bad = _tampered(ckpt, tmp_path, where, make(scene))
    monkeypatch.setattr(checkpoint, "check_config", lambda config, **_: None)
    monkeypatch.setattr(stored, "check_roles", lambda config: None)  # the second layer: what may be nested
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
    "emotionsumm.config.builders.instantiate", "emotionsumm.training.checkpoint.os",
    "emotionsumm.training.trainer.Trainer.__init__", "emotionsumm.config.builders.write_json", "emotionsumm",
    "emotionsumm.nope.Thing", "emotionsumm.models.text.nn.Linear",
    "torch.load", "", 3, None,
])
def test_refused_targets(target):
    assert refusal(target) is not None


@pytest.mark.parametrize("target", ["emotionsumm.training.checkpoint.Checkpointer",
                                    "emotionsumm.models.text.TextClassifier", "torch.optim.AdamW",
                                    "emotionsumm.training.schedulers.cosine_with_warmup"])
def test_allowed_targets(target):
    assert refusal(target) is None


def test_every_emotionsumm_target_conf_names_is_an_emotionsumm_class_or_function():
    from emotionsumm.config.trust import _defined_object

    assert {"torch.optim.AdamW", "emotionsumm.models.text.TextClassifier", "emotionsumm.runs.sweep.SweepCallback"} \
        <= conf_targets()
    for target in sorted(t for t in conf_targets() if t.startswith("emotionsumm.")):
        obj = _defined_object(target, "emotionsumm")
        assert callable(obj) and obj.__module__.startswith("emotionsumm."), target


def test_conf_scan_keeps_hydra_settings_to_emotionsumm_targets(tmp_path):
    (tmp_path / "hydra").mkdir()
    (tmp_path / "hydra/default.yaml").write_text(
        "callbacks:\n  x: {_target_: hydra_plugins.x.Callback}\n"
        "  y: {_target_: emotionsumm.runs.sweep.SweepCallback}\n")
    (tmp_path / "launcher").mkdir()
    (tmp_path / "launcher/a.yaml").write_text("hydra:\n  launcher: {_target_: hydra_plugins.l.Launcher}\n")
    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer/b.yaml").write_text("_target_: torch.optim.SGD\nextra: [{_target_: pkg.mod.Thing}]\n")
    assert conf_targets(str(tmp_path)) == {"emotionsumm.runs.sweep.SweepCallback", "torch.optim.SGD", "pkg.mod.Thing"}


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


# ---- trust: the running command decides, never the checkpoint -----------------------------------------------

LAB_MODELS = """\
import os
from os import system

from emotionsumm.models.text import TextClassifier
from pathlib import Path
Path({marker!r}).touch()


class WideText(TextClassifier):
    pass


def build(**kwargs):
    return WideText(**kwargs)


INSTANCE_ATTR = 3
"""


@pytest.fixture
def lab(tmp_path, monkeypatch) -> Path:
    """A lab's repository: package `mylab` (models.py marks its import), its conf/, and a `mylabx` lookalike."""
    root = tmp_path / "lab"
    (root / "mylab" / "conf" / "model").mkdir(parents=True)
    (root / "mylab" / "__init__.py").write_text("")
    (root / "mylab" / "conf" / "__init__.py").write_text("")
    (root / "mylab" / "models.py").write_text(LAB_MODELS.format(marker=str(tmp_path / "imported")))
    (root / "mylab" / "conf" / "model" / "wide.yaml").write_text("_target_: mylab.models.WideText\nhidden_size: 8\n")
    (root / "mylabx").mkdir()
    (root / "mylabx" / "__init__.py").write_text(f"from pathlib import Path\nPath({str(tmp_path / 'x')!r}).touch()\n"
                                                 "class Y:\n    pass\n")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.split(".")[0] in ("mylab", "mylabx")]:
        del sys.modules[name]


def _lab_imported(lab: Path) -> bool:
    return (lab.parent / "imported").exists() or "mylab.models" in sys.modules


def test_untrusted_lab_target_is_refused_without_importing_it_and_names_the_override(lab):
    with pytest.raises(UntrustedConfigError) as info:
        check_config({"model": {"_target_": "mylab.models.WideText"}})
    message = str(info.value)
    assert message.startswith("model._target_='mylab.models.WideText' is not an emotionsumm class")
    assert "add trust=[mylab] to the command" in message
    assert not _lab_imported(lab)
    with pytest.raises(UntrustedConfigError, match=r"add trust=\[other, mylab\] to the command"):
        check_config({"model": {"_target_": "mylab.models.WideText"}}, trust=Trust(["other"]))
    assert not _lab_imported(lab)


def test_a_trusted_package_allows_what_it_defines_on_dotted_boundaries(lab):
    trust = Trust(["mylab"])
    assert trust.refusal("mylab.models.WideText") is None
    assert trust.refusal("mylab.models.build") is None  # a function of the trusted package
    assert _lab_imported(lab)  # imported once trusted
    assert "trust=[mylab, mylabx]" in trust.refusal("mylabx.Y")  # mylab does not hold mylabx
    assert "mylabx" not in sys.modules and not (lab.parent / "x").exists()
    for reexport in ("mylab.models.system", "mylab.models.os.system", "mylab.models.TextClassifier",
                     "mylab.models.Path", "mylab.models.INSTANCE_ATTR", "mylab.models.WideText.__init__",
                     "mylab.nope.Thing", "mylab"):
        assert trust.refusal(reexport) is not None, reexport
    assert Trust(["mylab.models"]).refusal("mylab.models.WideText") is None
    assert Trust(["mylab.data"]).refusal("mylab.models.WideText") is not None


@pytest.mark.parametrize("package", ["builtins", "os", "subprocess", "shutil", "sys", "importlib", "pickle", "hydra",
                                     "omegaconf", "emotionsumm", "emotionsumm.runs.atomic", "torch", "os.path",
                                     "transformers",
                                     "", "my-lab", "mylab.__init__", 3])
def test_trust_refuses_the_standard_library_and_the_frameworks(package):
    with pytest.raises(ValueError, match="trust"):
        Trust([package])


def test_config_dirs_of_the_command_are_trusted_file_and_pkg(lab):
    wide = {"model": {"_target_": "mylab.models.WideText"}}
    check_config(wide, trust=Trust(conf_dirs=[f"file://{lab / 'mylab' / 'conf'}"]))
    check_config(wide, trust=Trust(conf_dirs=["pkg://mylab.conf"]))
    assert not _lab_imported(lab)  # named by a config: nothing of the lab was imported to decide it
    with pytest.raises(UntrustedConfigError):
        check_config(wide, trust=Trust(conf_dirs=[f"file://{lab}/nowhere", "pkg://nope.conf"]))


def test_command_trust_comes_from_the_composed_config_never_the_checkpoint(lab, tmp_path):
    from emotionsumm.config.trust import command_trust

    conf = lab / "mylab" / "conf"
    cfg = make_cfg(tmp_path / "e", [f"hydra.searchpath=[file://{conf}]", "trust=[mylab]", "ckpt=x"],
                   config_name="evaluate")
    assert command_trust(cfg) == Trust(["mylab"], [f"file://{conf}"])
    # a checkpoint's own `trust` and config dirs are data: the default command trusts neither
    stored = {"trust": ["mylab"], "hydra": {"searchpath": [f"file://{conf}"]},
              "model": {"_target_": "mylab.models.WideText"}}
    plain = command_trust(make_cfg(tmp_path / "p", ["ckpt=x"], config_name="predict"))
    assert plain == SHIPPED
    with pytest.raises(UntrustedConfigError, match=r"model\._target_='mylab\.models\.WideText'.*trust=\[mylab\]"):
        check_config(stored, trust=plain)
    with pytest.raises(ValueError, match=r"trust=\[os\] is refused"):
        command_trust(make_cfg(tmp_path / "t", ["trust=[os]"]))
    with pytest.raises(ValueError, match="is not a list"):
        command_trust(OmegaConf.create({"trust": "mylab"}))


@pytest.mark.parametrize(("where", "make", "key", "target", "live"), [p[1:] for p in PAYLOADS],
                         ids=[p[0] for p in PAYLOADS])
def test_every_payload_stays_refused_with_a_lab_trusted(lab, tmp_path, monkeypatch, where, make, key, target, live):
    scene = Scene(tmp_path, monkeypatch)
    config: dict = {"model": {"_target_": "mylab.models.WideText"}}
    _set(config, where, make(scene))
    trust = Trust(["mylab"], [f"file://{lab / 'mylab' / 'conf'}", "pkg://mylab.conf"])
    with pytest.raises(UntrustedConfigError) as info:
        check_config(config, trust=trust)
    assert str(info.value).startswith(f"{key}={target!r}")
    assert scene.untouched()
