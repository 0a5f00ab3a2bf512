"""Where a run stands, in one object that every checkpoint saves and a resume restores.

Step, epoch and position in the epoch, what already happened at the current step (a validation,
a save), the last validation's metrics, early stopping, the top-k ranking and the RNG states of
every rank. A resumed run continues from exactly this point.
"""

from __future__ import annotations

from typing import Any

from . import distributed as dist
from .checkpoint import Checkpointer
from .seed import rng_state, set_rng_state


class EarlyStopping:
    """Stop when the monitored metric has not improved by more than `min_delta` for `patience` validations.

    "Improved" is the checkpointer's comparison (the same `trainer.mode`), so both agree on what is better.
    """

    def __init__(self, checkpointer: Checkpointer, patience: int | None, min_delta: float = 0.0) -> None:
        self.checkpointer, self.patience, self.min_delta = checkpointer, patience, min_delta
        self.best: float | None = None
        self.wait = 0

    def update(self, metrics: dict[str, float]) -> str | None:
        """Count one validation; the reason to stop, or None to go on."""
        monitor = self.checkpointer.monitor
        if not self.patience or monitor not in metrics:
            return None
        score, best = metrics[monitor], self.best
        if best is None or self.checkpointer.is_better(score, best, margin=self.min_delta):
            self.best, self.wait = score, 0
            return None
        self.wait += 1
        if self.wait < self.patience:
            return None
        return (f"early stopping: {monitor} did not improve by more than {self.min_delta} for "
                f"{self.patience} validations (best {best:.4f})")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state.get("best"), int(state.get("wait", 0))


class TrainState:
    """The counters of a run plus the bookkeeping objects whose state travels with them."""

    def __init__(self, checkpointer: Checkpointer, early_stopping: EarlyStopping) -> None:
        self.step = 0  # optimizer steps done
        self.epoch = 0  # epochs finished
        self.batch_in_epoch = 0  # micro-batches of the current epoch done
        self.last_val_step = -1  # the step of the latest validation and of the latest save:
        self.last_save_step = -1  # so that nothing happens twice at one step (e.g. at an epoch's end)
        self.val_metrics: dict[str, float] = {}  # of the latest validation
        self.checkpointer, self.early_stopping = checkpointer, early_stopping

    def state_dict(self, saved_metrics: dict[str, float] | None) -> dict[str, Any]:
        """The run state for a checkpoint on every rank (RNG states are gathered from all ranks).

        `saved_metrics`: the validation of this very step, if the save follows one.
        """
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "metrics": dict(saved_metrics or {}),
            "callbacks": {"checkpointer": self.checkpointer.state_dict(),
                          "early_stopping": self.early_stopping.state_dict()},
            "rng": dist.gather_object(rng_state()),
            "world_size": dist.world_size(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.val_metrics = dict(state.get("metrics") or {})
        self.last_save_step = self.step
        self.last_val_step = self.step if self.val_metrics else -1
        callbacks = state.get("callbacks", {})
        if "checkpointer" in callbacks:
            self.checkpointer.load_state_dict(callbacks["checkpointer"])
        self.early_stopping.load_state_dict(callbacks.get("early_stopping", {}))
        rngs = state.get("rng") or []
        if dist.rank() < len(rngs):
            set_rng_state(rngs[dist.rank()])

    def position(self) -> str:
        return f"step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})"
