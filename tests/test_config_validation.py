"""A bad configuration value fails before training and names its key (issue 9, part 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from emotionsumm.config.core import CONFIG_DIR, validate_config

from .conftest import cli, make_cfg

RUN = Path("/nonexistent/compose-only")
# the model's data-given sizes, for building the default model straight from a composed config
TINY_TEXT_MODEL = {"num_classes": 3, "vocab_size": 50, "pad_token_id": 0, "hidden_size": 16, "num_layers": 2,
                   "num_heads": 2, "intermediate_size": 32}


def invalid(overrides: list[str]) -> str:
    with pytest.raises(ValueError) as err:
        validate_config(make_cfg(RUN, overrides))
    return str(err.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["group_lr={head: -1e-3}"], "group_lr.head=-0.001 is out of range; allowed: > 0"),
    (["+group_lr.encoder=0"], "group_lr.encoder=0 is out of range; allowed: > 0"),
    (["optimizer.lr=-3e-4"], "optimizer.lr=-0.0003 is out of range; allowed: > 0"),
    (["optimizer.lr=0"], "optimizer.lr=0 is out of range; allowed: > 0"),
    (["optimizer=sgd", "optimizer.lr=0.0"], "optimizer.lr=0.0 is out of range; allowed: > 0"),
    (["group_lr={head: fast}"], "group_lr.head='fast' is not a valid float (expected float > 0"),
    (["group_lr=abc"], "group_lr='abc' is not a mapping"),
])
def test_nonpositive_or_non_numeric_learning_rate_names_its_key(overrides, message):
    assert message in invalid(overrides)


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.max_steps=abc"], "trainer.max_steps='abc' is not a valid int (expected int, e.g. trainer.max_steps="),
    (["trainer.max_epochs=x"], "trainer.max_epochs='x' is not a valid int (expected int, e.g."),
    (["trainer.max_epochs=2.5"], "trainer.max_epochs=2.5 is not a valid int"),
    (["optimizer.lr=fast"], "optimizer.lr='fast' is not a valid float (expected float, e.g. optimizer.lr=0.001)"),
    (["data.batch_size=big"], "data.batch_size='big' is not a valid int (expected int, e.g. data.batch_size=32)"),
    (["trainer.val_every_n_steps=often"], "trainer.val_every_n_steps='often' is not a valid int (expected int "
                                          "or null"),
    (["trainer.gradient_clip_val=[1]"], "trainer.gradient_clip_val=[1] is not a valid float"),
    (["trainer.deterministic=1"], "trainer.deterministic=1 is not a valid bool (expected bool, e.g. "
                                  "trainer.deterministic=false)"),
    (["scheduler.warmup_steps=some"], "scheduler.warmup_steps='some' is not a valid int"),
    (["scheduler=step", "scheduler.gamma=half"], "scheduler.gamma='half' is not a valid float"),
    (["model.hidden_size=wide"], "model.hidden_size='wide' is not a valid int"),
    (["policy.label_smoothing=lots"], "policy.label_smoothing='lots' is not a valid float"),
    (["ema.decay=slow"], "ema.decay='slow' is not a valid float"),
    (["experiment=emotion_fusion", "model.encoders.audio.width=wide"], "model.encoders.audio.width='wide'"),
])
def test_wrong_type_for_a_numeric_key_names_the_key_and_the_type(overrides, message):
    assert message in invalid(overrides)


def test_every_bad_value_is_listed_at_once():
    message = invalid(["trainer.max_steps=abc", "data.batch_size=big", "group_lr={head: -1e-3}"])
    assert "trainer.max_steps=" in message and "data.batch_size=" in message and "group_lr.head=" in message


@pytest.mark.parametrize("overrides", [
    *[[f"experiment={p.stem}"] for p in sorted(Path(CONFIG_DIR, "experiment").glob("*.yaml"))],
    ["experiment=emotion_image", "model=image_resnet18"], ["experiment=summarization", "model=bart_base"],
    ["optimizer=sgd", "scheduler=step"], ["scheduler=constant", "debug=fast"], ["debug=overfit"],
    ["trainer.limit_train_batches=0.5", "trainer.max_steps=10", "trainer.fast_dev_run=2"],
    ["hparams_search=emotion_text_optuna"],
], ids=lambda o: " ".join(o))
def test_shipped_configs_pass_validation(overrides):
    validate_config(make_cfg(RUN, overrides))


def test_param_groups_rejects_a_nonpositive_part_lr():
    from torch import nn

    from emotionsumm.training.optim import param_groups

    class Policy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(2, 2)

        def param_parts(self):
            return {"head": ("head.",)}

    with pytest.raises(ValueError, match=r"group_lr.head=-0.001 is out of range; allowed: > 0"):
        param_groups(Policy(), 0.0, {"head": -1e-3})
    with pytest.raises(ValueError, match=r"group_lr.head='x' is not a valid float"):
        param_groups(Policy(), 0.0, {"head": "x"})


def test_readme_group_lr_reaches_the_optimizer():
    """`'group_lr={encoder: 3e-5, head: 1e-3}'` (README) names parts of the default model, and those lrs
    are what the optimizer gets for the encoder's and the head's parameters."""
    from emotionsumm.training.optim import param_groups

    cfg = make_cfg(RUN, ["group_lr={encoder: 3e-5, head: 1e-3}", "scheduler=constant"])
    validate_config(cfg)
    model = instantiate(cfg.model, **TINY_TEXT_MODEL)
    policy = instantiate(cfg.policy, model=model, class_names=["a", "b", "c"])
    optimizer = instantiate(cfg.optimizer)(param_groups(policy, cfg.optimizer.weight_decay, cfg.group_lr))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert {lr_of[id(p)] for p in model.encoder.parameters()} == {3e-5}
    assert {lr_of[id(p)] for p in model.head.parameters()} == {1e-3}


def test_readme_unfreeze_schedule_builds_the_model():
    """`model.freeze_encoder=true 'model.unfreeze_at_epochs={1: 2, 3: -1}'` (README) composes and builds."""
    cfg = make_cfg(RUN, ["model.freeze_encoder=true", "model.unfreeze_at_epochs={1: 2, 3: -1}"])
    validate_config(cfg)
    model = instantiate(cfg.model, **TINY_TEXT_MODEL)

    def trainable_layers() -> list[bool]:
        return [all(p.requires_grad for p in layer.parameters()) for layer in model._layers()]

    model.on_epoch_start(0)
    assert trainable_layers() == [False, False]
    model.on_epoch_start(1)
    assert trainable_layers() == [True, True]  # the top 2 of 2 layers
    model.on_epoch_start(3)
    assert all(p.requires_grad for p in model.encoder.parameters())


@pytest.mark.slow
def test_cli_fails_before_training_and_names_the_keys(tmp_path):
    run = tmp_path / "run"
    proc = cli("train", "group_lr={head: -1e-3}", "trainer.max_steps=abc", "optimizer.lr=fast",
               f"hydra.run.dir={run}", timeout=120)
    assert proc.returncode != 0
    assert "group_lr.head=-0.001 is out of range; allowed: > 0" in proc.stderr
    assert "trainer.max_steps='abc' is not a valid int (expected int" in proc.stderr
    assert "optimizer.lr='fast' is not a valid float" in proc.stderr
    assert not (run / "checkpoints").exists() and not (run / "provenance.json").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 is out of range; allowed: > 0 (the max gradient "
                                     "norm; use null or 0 to disable clipping)"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 is out of range; allowed: >= 1 (an int: that "
                                      "many batches; a float in (0, 1]: that fraction; null: all)"),
    ("trainer.limit_val_batches=0", "To skip validation, give no validation split (data.files.val=null)"),
    ("trainer.limit_val_batches=0.0", "trainer.limit_val_batches=0.0 is out of range; allowed: (0, 1]"),
    ("trainer.limit_test_batches=1.5", "trainer.limit_test_batches=1.5 is out of range; allowed: (0, 1]"),
    ("trainer.limit_test_batches=0", "To skip the test, set trainer.test_after_fit=false"),
    ("trainer.val_every_n_steps=0", "trainer.val_every_n_steps=0 is out of range; allowed: >= 1 (use null to "
                                    "disable validation by steps)"),
    ("trainer.val_every_n_epochs=0", "trainer.val_every_n_epochs=0 is out of range; allowed: >= 1 (use null"),
    ("trainer.checkpoint_every_n_steps=0", "trainer.checkpoint_every_n_steps=0 is out of range; allowed: >= 1 "
                                           "(use null to disable checkpoints by steps"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is out of range; allowed: >= 1 (-1: no epoch limit"),
    ("trainer.max_steps=0", "trainer.max_steps=0 is out of range; allowed: >= 1 (use -1 to let trainer.max_epochs"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is out of range; allowed: >= 1"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is out of range; allowed: >= 1"),
    ("trainer.save_top_k=-2", "trainer.save_top_k=-2 is out of range; allowed: >= -1 (-1: keep every checkpoint"),
    ("trainer.early_stopping_patience=0", "trainer.early_stopping_patience=0 is out of range; allowed: >= 1 (use "
                                          "null to disable early stopping)"),
    ("trainer.early_stopping_min_delta=-0.1", "trainer.early_stopping_min_delta=-0.1 is out of range; allowed: >= 0"),
    ("trainer.overfit_batches=-1", "trainer.overfit_batches=-1 is out of range; allowed: >= 0 (0: off)"),
    ("trainer.fast_dev_run=0", "trainer.fast_dev_run=0 is out of range; allowed: >= 1 (or true = 1; use false"),
    ("ema.decay=1.0", "ema.decay=1.0 is out of range; allowed: [0, 1) (use ema.enabled=false to disable EMA)"),
    ("scheduler.warmup_steps=-5", "scheduler.warmup_steps=-5 is out of range; allowed: >= 0"),
    ("scheduler.min_lr_ratio=1.5", "scheduler.min_lr_ratio=1.5 is out of range; allowed: [0, 1]"),
    ("optimizer.weight_decay=-0.01", "optimizer.weight_decay=-0.01 is out of range; allowed: >= 0"),
    ("optimizer.betas=[0.9,1.0]", "optimizer.betas[1]=1.0 is out of range; allowed: [0, 1)"),
    ("optimizer.eps=0", "optimizer.eps=0 is out of range; allowed: > 0"),
    ("data.batch_size=0", "data.batch_size=0 is out of range; allowed: >= 1"),
    ("data.eval_batch_size=0", "data.eval_batch_size=0 is out of range; allowed: >= 1"),
    ("data.num_workers=-1", "data.num_workers=-1 is out of range; allowed: >= 0"),
    ("policy.label_smoothing=1.0", "policy.label_smoothing=1.0 is out of range; allowed: [0, 1)"),
    ("model.dropout=1.0", "model.dropout=1.0 is out of range; allowed: [0, 1)"),
    ("model.classifier_dropout=-0.1", "model.classifier_dropout=-0.1 is out of range; allowed: [0, 1)"),
    ("seed=-1", "seed=-1 is out of range; allowed: >= 0"),
])
def test_out_of_range_value_is_refused_naming_key_value_and_range(override, message):
    assert message in invalid([override])


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer=sgd", "optimizer.momentum=1.0"], "optimizer.momentum=1.0 is out of range; allowed: [0, 1)"),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0 is out of range; allowed: >= 1"),
    (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma=0 is out of range; allowed: (0, 1]"),
    (["experiment=summarization", "policy.num_beams=0"], "policy.num_beams=0 is out of range; allowed: >= 1"),
    (["experiment=summarization", "data.max_eval_examples=0"], "data.max_eval_examples=0 is out of range; "
                                                               "allowed: >= 1 (null: all)"),
    (["experiment=emotion_fusion", "model.encoders.audio.dropout=1.5"], "model.encoders.audio.dropout=1.5 is out "
                                                                        "of range; allowed: [0, 1)"),
    (["experiment=emotion_fusion", "model.modality_dropout=1.0"], "model.modality_dropout=1.0 is out of range"),
])
def test_out_of_range_value_of_another_config_choice_is_refused(overrides, message):
    assert message in invalid(overrides)


def test_the_issue_settings_are_refused_all_at_once():
    message = invalid(["trainer.gradient_clip_val=-1", "trainer.limit_train_batches=0", "trainer.limit_val_batches=0",
                       "trainer.val_every_n_steps=0", "trainer.checkpoint_every_n_steps=0"])
    keys = ["gradient_clip_val", "limit_train_batches", "limit_val_batches", "val_every_n_steps",
            "checkpoint_every_n_steps"]
    assert sorted(line.split("=")[0] for line in message.splitlines()[1:]) == sorted(f"  trainer.{k}" for k in keys)


@pytest.mark.parametrize("overrides", [
    ["trainer.gradient_clip_val=null"], ["trainer.gradient_clip_val=0"], ["trainer.gradient_clip_val=0.5"],
    ["trainer.limit_val_batches=1.0", "trainer.limit_train_batches=3", "trainer.limit_test_batches=0.01"],
    ["trainer.val_every_n_epochs=null", "trainer.val_every_n_steps=5", "trainer.checkpoint_every_n_steps=1"],
    ["trainer.max_steps=10", "trainer.max_epochs=-1"], ["trainer.save_top_k=-1", "trainer.early_stopping_patience=1"],
    ["trainer.fast_dev_run=false"], ["trainer.fast_dev_run=3"], ["ema.decay=0.0"], ["seed=0"],
], ids=lambda o: " ".join(o))
def test_in_range_and_off_values_pass(overrides):
    validate_config(make_cfg(RUN, overrides))


def test_every_range_key_is_a_key_of_a_shipped_config():
    """The table names real keys: each of its keys (or patterns) matches a key of a composed shipped config."""
    import fnmatch

    from omegaconf import DictConfig

    from emotionsumm.config.ranges import RANGES

    def keys(node: DictConfig, path: str = ""):
        for key, child in node.items_ex(resolve=False):
            if isinstance(child, DictConfig):
                yield from keys(child, f"{path}{key}.")
            else:
                yield f"{path}{key}"

    composed = set()
    for overrides in [[], ["optimizer=sgd", "scheduler=step"], ["experiment=summarization"],
                      ["experiment=emotion_fusion_meld_minilm"], ["experiment=emotion_features_demo"],
                      ["data=image_demo", "model=image_cnn"]]:
        composed |= set(keys(make_cfg(RUN, overrides)))
    assert [p for p in RANGES if not any(fnmatch.fnmatchcase(k, p) for k in composed)] == []
