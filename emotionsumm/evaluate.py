"""`python -m emotionsumm.evaluate ckpt=<path> split=test`: metrics of a checkpoint on a split.

Writes metrics.json into its own run dir and prints it. Uses the EMA weights when the
checkpoint has them unless `weights=raw`. `+data.<key>=…` overrides the checkpoint's data config
(e.g. another file for the split); `quantize=int8` quantises the Linear layers (CPU);
`generation.num_beams=…` etc. replace a seq2seq checkpoint's decoding options.
`baseline=lead3|majority|linear experiment=<name>` scores a baseline on that experiment's data instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config.core import CONFIG_DIR, register_resolvers
from .runs.layout import METRICS_FILE

log = logging.getLogger(__name__)
register_resolvers()


def evaluate(cfg: DictConfig) -> dict[str, float]:

    from .runs.atomic import write_json

    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("baseline"):
        from .metrics.baselines import evaluate_baseline

        metrics = evaluate_baseline(cfg, run_dir)
    else:
        metrics = _evaluate_checkpoint(cfg, run_dir)
    write_json(metrics, run_dir / METRICS_FILE)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    log.info("metrics written to %s", run_dir / METRICS_FILE)
    return metrics


def _evaluate_checkpoint(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    from .config.builders import load_for_inference
    from .config.trust import command_trust
    from .models.quantize import quantize
    from .training.trainer import Trainer

    if not cfg.get("ckpt"):
        raise ValueError("ckpt is not set; set ckpt=<path to a checkpoint> "
                         "(or baseline=lead3 experiment=<name> to score a baseline)")
    if cfg.get("model") is not None:
        raise ValueError("experiment=… only applies to baseline=…; a checkpoint carries its own config "
                         "(override its data with +data.<key>=…)")
    _, data, policy = load_for_inference(cfg.ckpt, cfg.weights, cfg.get("data"), splits=(cfg.split,),
                                         cache_dir=cfg.paths.cache_dir, trust=command_trust(cfg))
    decoding = {k: v for k, v in (cfg.get("generation") or {}).items() if v is not None}
    if decoding:
        if not hasattr(policy, "generation"):
            raise ValueError(f"generation.{next(iter(decoding))}=… applies to seq2seq checkpoints only")
        policy.generation.update(decoding)
    quantized = cfg.get("quantize") not in (None, "none")
    policy = quantize(policy, cfg.get("quantize"))
    if cfg.batch_size:
        data.eval_batch_size = cfg.batch_size
    trainer = Trainer(run_dir=run_dir, accelerator="cpu" if quantized else cfg.accelerator,
                      progress_bar=cfg.progress_bar)
    metrics = trainer.evaluate(policy, data, cfg.split)
    metrics = {**metrics, "ckpt": str(cfg.ckpt), "weights": cfg.weights}
    if quantized:
        metrics["quantize"] = str(cfg.quantize)
    if decoding:
        metrics["generation"] = decoding
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
