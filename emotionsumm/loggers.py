"""Metric loggers: a small protocol, TensorBoard on rank 0, and a no-op for the other ranks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

log = logging.getLogger(__name__)


class MetricLogger(Protocol):
    histogram_every_n_steps: int

    def log_scalars(self, scalars: dict[str, float], step: int) -> None: ...
    def log_histograms(self, module: nn.Module, step: int) -> None: ...
    def log_figure(self, tag: str, figure: Any, step: int) -> None: ...
    def log_text(self, tag: str, text: str, step: int) -> None: ...
    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    """Logs nothing: used on ranks other than 0 and when `logger=none`."""

    histogram_every_n_steps = 0

    def log_scalars(self, scalars: dict[str, float], step: int) -> None: ...
    def log_histograms(self, module: nn.Module, step: int) -> None: ...
    def log_text(self, tag: str, text: str, step: int) -> None: ...
    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        import matplotlib.pyplot as plt

        plt.close(figure)


class TensorBoardLogger:
    """TensorBoard event files under `<run dir>/tb`.

    `purge_step` drops events at or after that step left by a killed run, so curves of a resumed
    run are not doubled. Flushed at every checkpoint, so the logs are as durable as the weights.
    """

    def __init__(self, log_dir: str | Path, histogram_every_n_steps: int = 0, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.histogram_every_n_steps = histogram_every_n_steps
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_histograms(self, module: nn.Module, step: int) -> None:
        for name, param in module.named_parameters():
            if param.numel() == 0:
                continue
            self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
            if param.grad is not None:
                self.writer.add_histogram(f"grads/{name}", param.grad.detach().float().cpu(), step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        self.writer.add_figure(tag, figure, step, close=True)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Write the hparams summary into this run (not a sub-run) so the HParams view links it."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        scalars = {f"hparams/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        exp, ssi, sei = hparams_summary(clean, scalars)
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def grad_norm(module: nn.Module) -> float:
    """Total L2 norm of the gradients (used when no clipping computed it already)."""
    grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
