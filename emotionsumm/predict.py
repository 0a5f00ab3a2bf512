"""`python -m emotionsumm.predict ckpt=<path> input=<file or ->`: one prediction per input line.

Prints `label<TAB>probability` per non-empty line (stdin with `input=-`); logs go to stderr so
the output can be piped.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import CONFIG_DIR, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def read_lines(source: str) -> list[str]:
    """Non-empty lines of a file, or of stdin for '-'."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"input: file not found: {path} (set input=<file> or input=- for stdin)")
        text = path.read_text(encoding="utf-8")
    lines = [line.rstrip("\r") for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"input: no non-empty line to predict in {'stdin' if source == '-' else source}")
    return lines


def predict(cfg: DictConfig) -> list[tuple[str, float]]:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from .runtime import load_for_inference

    _, data, policy = load_for_inference(cfg.ckpt, cfg.weights)
    lines = read_lines(str(cfg.input))
    loader = DataLoader(data.encode_inputs(lines), batch_size=cfg.batch_size, collate_fn=data.collate)
    embeddings: list[torch.Tensor] = []
    hook = None
    if cfg.export_embeddings:
        pooled = getattr(policy.model, "pooled", None)
        if pooled is None:
            raise ValueError(f"export_embeddings=true: {type(policy.model).__name__} has no `pooled` module to hook")
        hook = pooled.register_forward_hook(lambda _m, _i, out: embeddings.append(out.detach().float().cpu()))
    results = []
    with torch.no_grad():
        for batch in loader:
            probs = policy.predict_proba(batch)
            conf, idx = probs.max(-1)
            results += [(policy.class_names[i], float(p)) for i, p in zip(idx.tolist(), conf.tolist())]
    for label, prob in results:
        print(f"{label}\t{prob:.4f}")
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
