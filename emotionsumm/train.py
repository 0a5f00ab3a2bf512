"""`python -m emotionsumm.train [overrides]`: compose conf/train.yaml, build everything, fit, test.

Heavy libraries (torch, transformers) are imported only inside `train`, so `--cfg job`
prints the composed config instantly.
"""

from __future__ import annotations

if __name__ == "__main__":  # a stop signal during the imports below says so instead of a bare signal code
    from .training.stop import install_early_stop

    install_early_stop(importing=True)

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from .config.core import (
    CONFIG_DIR,
    PROJECT_ROOT,
    RUN_STAMP_ENV,
    env_world_size,
    format_tree,
    register_resolvers,
    run_stamp,
    validate_config,
)
from .runs.guard import clear_previous, files_of, written_since
from .runs.lock import run_dir_lock

log = logging.getLogger(__name__)
register_resolvers()


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the configured experiment; returns the final metrics (also in metrics.json)."""
    validate_config(cfg)
    from .config.trust import command_trust
    from .metrics.class_baselines import baseline_names
    from .training import distributed as dist
    from .training.stop import StoppedEarly, StopRequest, disarm_early_stop, signal_name

    trust = command_trust(cfg)  # before anything runs: a bad `trust=` entry fails here
    baseline_names(cfg.get("baseline"))  # and so does a bad `baseline=`

    run_dir = Path(cfg.paths.output_dir)
    try:
        with run_dir_lock(run_dir) if dist.is_main() else contextlib.nullcontext(), StopRequest() as stop:
            # under DDP a rank must not leave alone (the others would wait in a collective): all stop after step 1
            stop.setting_up, before = dist.world_size() == 1, files_of(run_dir)
            try:
                if dist.is_main() and cfg.trainer.get("overwrite") and not cfg.trainer.get("resume"):
                    clear_previous(run_dir)
                return _train(cfg, run_dir, stop, trust)
            except StoppedEarly as early:
                if dist.is_main():
                    log.warning("stopped by %s before training; %s", signal_name(early.signum),
                                written_since(run_dir, before))
                early.reported = True
                raise
    finally:  # StopRequest has put main()'s handlers back: a signal from now on is not 'before training'
        disarm_early_stop()


def _train(cfg: DictConfig, run_dir: Path, stop: Any, trust: Any) -> dict[str, float]:
    from hydra.utils import instantiate

    from .config.builders import build_data, build_policy, instantiate_enabled
    from .metrics.class_baselines import baseline_names, run_baselines
    from .runs.atomic import write_json
    from .runs.provenance import provenance
    from .runs.sweep import current_sweep_dir
    from .tracking.loggers import logger_factory
    from .training import distributed as dist
    from .training.optim import param_groups
    from .training.seed import seed_everything

    seed_everything(cfg.seed, cfg.trainer.deterministic)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if dist.is_main():
        log.info("run dir: %s\n%s", run_dir, format_tree(cfg))
        write_json(provenance(PROJECT_ROOT, dist.world_size()), run_dir / "provenance.json")

    loggers = logger_factory(cfg.get("logger"), run_dir=run_dir, run_config=resolved, sweep_dir=current_sweep_dir())
    trainer = instantiate(cfg.trainer, _recursive_=False, _convert_="all", run_dir=str(run_dir), seed=cfg.seed,
                          logger=loggers,
                          ema=instantiate_enabled(cfg.get("ema")), run_config=resolved, stop=stop, trust=trust)
    resumed = trainer.resume_checkpoint()
    data = build_data(cfg, run_dir, state=resumed[0].get("data") if resumed else None)
    policy = build_policy(cfg, data)
    optimizer = instantiate(cfg.optimizer)(param_groups(policy, cfg.optimizer.get("weight_decay", 0.0),
                                                        cfg.get("group_lr")))
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    stop.setting_up = False  # from here a signal saves after the optimizer step it arrives in
    baselines = run_baselines(baseline_names(cfg.get("baseline")), data) if dist.is_main() else None
    metrics = trainer.fit(policy, data, optimizer, scheduler, final_metrics=baselines)
    if dist.is_main():
        write_json(metrics, run_dir / "metrics.json")
        log.info("metrics written to %s", run_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from .runs.sweep import in_multirun, run_sweep_job, sweeper_result

    if in_multirun():  # skip if finished, resume if started, record a failure and carry on
        return run_sweep_job(cfg, train)
    return sweeper_result(cfg, train(cfg))


def _prepare_distributed() -> None:
    """Under torchrun, rank 0 picks the run dir stamp and the others receive it (one run dir)."""
    from .training import distributed as dist

    if not dist.init_from_env():
        return
    os.environ[RUN_STAMP_ENV] = dist.broadcast_object(run_stamp() if dist.is_main() else None)
    if not dist.is_main():  # only rank 0 writes .hydra/ and the log file; the others print warnings
        sys.argv += ["hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console]",
                     "hydra.job_logging.root.level=WARNING"]


def main() -> None:
    from .training.stop import StoppedEarly, install_early_stop, signal_name

    install_early_stop()
    launched_by_torchrun = env_world_size() > 1
    try:
        if launched_by_torchrun:
            _prepare_distributed()
        _hydra_main()
    except StoppedEarly as early:
        if not early.reported:  # before `train`: Hydra may have written .hydra/ and the log file, nothing else
            log.warning("stopped by %s before training; nothing was written", signal_name(early.signum))
        raise
    finally:
        if launched_by_torchrun:
            from .training.distributed import cleanup

            cleanup()


if __name__ == "__main__":
    main()
