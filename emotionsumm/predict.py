"""`python -m emotionsumm.predict ckpt=<path> input=<file or ->`: one output line per input.

What an input is comes from the data (a text per line for text classification) and what is
printed from the policy (`label<TAB>probability` for classification). Logs go to stderr so the
output can be piped. `export_embeddings=true` also saves the pooled features of the inputs, in order
(`embeddings_path`, .npy), and with a manifest input `embeddings_manifest` writes a manifest that
refers to them (the first stage of feature fusion: train on it with `data.features`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config.core import CONFIG_DIR, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def predict(cfg: DictConfig) -> list[str]:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from .config.builders import load_for_inference
    from .config.trust import command_trust
    from .interfaces import FeatureManifestData
    from .models.quantize import quantize
    from .runs.atomic import atomic_open, atomic_write_text

    _, data, policy = load_for_inference(cfg.ckpt, cfg.weights, cache_dir=cfg.paths.cache_dir,
                                         trust=command_trust(cfg))
    manifest = cfg.get("embeddings_manifest") if cfg.export_embeddings else None
    if manifest and not isinstance(data, FeatureManifestData):
        raise ValueError(f"embeddings_manifest={manifest}: {type(data).__name__} reads no manifests; it needs a "
                         "checkpoint of manifest data (data=multimodal_*, features_*) and input=<manifest>")
    policy = quantize(policy, cfg.get("quantize"))
    dataset = data.predict_dataset(str(cfg.input))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=data.collate)
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
        array = torch.cat(embeddings).numpy()
        if len(array) != len(dataset):
            raise RuntimeError(f"export_embeddings: {len(array)} embeddings for {len(dataset)} inputs (the model's "
                               "`pooled` module ran more or less than once per example)")
        path = Path(cfg.embeddings_path)
        with atomic_open(path, "wb") as fh:
            np.save(fh, array)
        log.info("embeddings %s written to %s", tuple(array.shape), path)
        if manifest:
            atomic_write_text(data.feature_manifest(str(cfg.input), dataset.names, path, str(cfg.embeddings_column),
                                                    Path(manifest)), manifest)
            log.info("manifest written to %s (column %s)", manifest, cfg.embeddings_column)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
