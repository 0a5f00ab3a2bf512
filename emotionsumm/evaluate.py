"""`python -m emotionsumm.evaluate ckpt=<path> split=test`: metrics of a checkpoint on a split.

Writes metrics.json into its own run dir and prints it. Uses the EMA weights when the
checkpoint has them unless `weights=raw`. `+data.<key>=…` overrides the checkpoint's data config
(e.g. another file for the split).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import CONFIG_DIR, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def evaluate(cfg: DictConfig) -> dict[str, float]:

    from .runtime import load_for_inference, write_json
    from .trainer import Trainer

    run_dir = Path(cfg.paths.output_dir)
    _, data, policy = load_for_inference(cfg.ckpt, cfg.weights, cfg.get("data"), splits=(cfg.split,))
    if cfg.batch_size:
        data.eval_batch_size = cfg.batch_size
    trainer = Trainer(run_dir=run_dir, accelerator=cfg.accelerator, progress_bar=False)
    metrics = trainer.evaluate(policy, data, cfg.split)
    metrics = {**metrics, "ckpt": str(cfg.ckpt), "weights": cfg.weights}
    write_json(metrics, run_dir / "metrics.json")
    print(json.dumps(metrics, indent=2, sort_keys=True))
    log.info("metrics written to %s", run_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
