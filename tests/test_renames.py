"""Checkpoints written before the packages by role: their old `_target_` names are judged and rebuilt by the
names the rename map gives them, and the allow-list is as strict as before."""

from __future__ import annotations

import importlib.util

import pytest

from emotionsumm.config.core import PROJECT_ROOT
from emotionsumm.config.renames import MOVED_MODULES, current_target, current_targets
from emotionsumm.config.trust import SHIPPED, UntrustedConfigError, check_config, conf_targets, refusal

OLD_SHIPPED = {  # the shipped conf/'s emotionsumm targets as a checkpoint written before the move names them
    "emotionsumm.trainer.Trainer": "emotionsumm.training.trainer.Trainer",
    "emotionsumm.ema.EMA": "emotionsumm.training.ema.EMA",
    "emotionsumm.loggers.TensorBoardLogger": "emotionsumm.tracking.loggers.TensorBoardLogger",
    "emotionsumm.loggers.CSVLogger": "emotionsumm.tracking.loggers.CSVLogger",
    "emotionsumm.mlflow_logger.MLflowLogger": "emotionsumm.tracking.mlflow_logger.MLflowLogger",
    "emotionsumm.schedulers.cosine_with_warmup": "emotionsumm.training.schedulers.cosine_with_warmup",
    "emotionsumm.schedulers.constant_with_warmup": "emotionsumm.training.schedulers.constant_with_warmup",
    "emotionsumm.schedulers.step_decay": "emotionsumm.training.schedulers.step_decay",
    "emotionsumm.sweep.SweepCallback": "emotionsumm.runs.sweep.SweepCallback",
    "emotionsumm.runlock.RunDirLock": "emotionsumm.runs.lock.RunDirLock",
}


def test_every_old_module_is_gone_and_every_new_one_exists():
    """No shim at an old path (a file there would be a re-export); the map points at real modules only."""
    for old, new in MOVED_MODULES.items():
        assert old.count(".") == 1 and not (PROJECT_ROOT / (old.replace(".", "/") + ".py")).exists(), old
        assert (PROJECT_ROOT / (new.replace(".", "/") + ".py")).is_file(), new
        assert importlib.util.find_spec(new) is not None
    assert len(set(MOVED_MODULES.values())) == len(MOVED_MODULES)


def test_old_names_of_the_shipped_targets_map_to_names_the_shipped_configs_use():
    shipped = conf_targets()
    for old, new in OLD_SHIPPED.items():
        assert current_target(old) == new and new in shipped, old


def test_only_an_old_module_and_one_name_is_renamed():
    for name in ["emotionsumm.training.trainer.Trainer", "emotionsumm.runs.sweep.SweepCallback",
                 "emotionsumm.config.core.flatten", "emotionsumm.models.text.TextClassifier", "torch.optim.AdamW",
                 "emotionsumm.trainer.Trainer.__init__", "emotionsumm.trainer", "mylab.trainer.Trainer", ""]:
        assert current_target(name) == name
    assert current_target("emotionsumm.runs.Job") == "emotionsumm.runs.layout.Job"
    assert current_target("emotionsumm.io.write_json") == "emotionsumm.runs.atomic.write_json"


@pytest.mark.parametrize("old", sorted(OLD_SHIPPED))
def test_an_old_name_is_allowed_exactly_when_its_new_name_is(old):
    assert refusal(old) is None and refusal(OLD_SHIPPED[old]) is None


@pytest.mark.parametrize("old", [
    "emotionsumm.trainer.os",              # a re-export in the module it maps to
    "emotionsumm.io.write_json",           # an emotionsumm function no config names: writes files
    "emotionsumm.runtime.instantiate",     # a re-export of hydra's instantiate
    "emotionsumm.checkpoint.torch",        # a module, not a class
    "emotionsumm.trainer.NoSuchClass",     # maps to nothing
    "emotionsumm.trainer.Trainer.__init__",  # not `module.name`: judged as it is, and names nothing
    "emotionsumm.oldthing.Trainer",        # looks old, is in no map
    "emotionsumm.training_old.Trainer",
])
def test_an_old_looking_name_that_maps_to_nothing_allowed_is_refused(old):
    assert refusal(old) is not None
    assert refusal(current_target(old)) is not None
    with pytest.raises(UntrustedConfigError, match=r"trainer\._target_="):
        check_config({"trainer": {"_target_": old}}, trust=SHIPPED)


def test_a_stored_config_is_handed_on_with_todays_names():
    stored = {"trainer": {"_target_": "emotionsumm.trainer.Trainer", "max_steps": 3},
              "loggers": [{"_target_": "emotionsumm.loggers.CSVLogger"}],
              "model": {"_target_": "emotionsumm.models.text.TextClassifier", "name": "emotionsumm.ema.EMA"}}
    check_config(stored)
    assert current_targets(stored) == {
        "trainer": {"_target_": "emotionsumm.training.trainer.Trainer", "max_steps": 3},
        "loggers": [{"_target_": "emotionsumm.tracking.loggers.CSVLogger"}],
        "model": {"_target_": "emotionsumm.models.text.TextClassifier", "name": "emotionsumm.ema.EMA"}}
    assert stored["trainer"]["_target_"] == "emotionsumm.trainer.Trainer"  # a copy
