"""`python -m emotionsumm.predict ckpt=<path> input=<file or ->`: one output line per input.

What an input is comes from the data (a text per line for text classification) and what is
printed from the policy (`label<TAB>probability` for classification). Logs go to stderr so the
output can be piped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import CONFIG_DIR, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def predict(cfg: DictConfig) -> list[str]:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from .quantize import quantize
    from .runtime import load_for_inference

    _, data, policy = load_for_inference(cfg.ckpt, cfg.weights)
    policy = quantize(policy, cfg.get("quantize"))
    loader = DataLoader(data.predict_dataset(str(cfg.input)), batch_size=cfg.batch_size, collate_fn=data.collate)
    embeddings: list[torch.Tensor] = []
    hook = None
    if cfg.export_embeddings:
        pooled = getattr(policy.model, "pooled", None)
        if pooled is None:
            raise ValueError(f"export_embeddings=true: {type(policy.model).__name__} has no `pooled` module to hook")
        hook = pooled.register_forward_hook(lambda _m, _i, out: embeddings.append(out.detach().float().cpu()))
    results: list[str] = []
    with torch.no_grad():
        for batch in loader:
            rows = policy.predict_rows(batch)
            print("\n".join(rows), flush=True)
            results += rows
    if hook is not None:
        hook.remove()
        path = Path(cfg.embeddings_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, torch.cat(embeddings).numpy())
        log.info("embeddings %s written to %s", tuple(torch.cat(embeddings).shape), path)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
