"""The training loop: plain PyTorch, task-agnostic (it only knows the `Data` and `Policy` protocols).

Owns gradient accumulation, clipping, mixed precision, the EMA update, validation, early stopping,
checkpoints with exact resume, stop signals, TensorBoard scalars, DDP and `torch.compile`. Steps that
neither log nor save read nothing from the device (`step_checks.StepChecks`). Where the run stands lives in
`state.TrainState`; loaders in `loaders`; one evaluation pass in `scoring`. Why the run ends is one value,
`Trainer.stopping` (a `Stop`), that only the trainer sets and the loop reads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config.core import flatten, require_choice
from ..config.ranges import require_ranges
from ..config.trust import SHIPPED, Trust
from ..interfaces import Data, Policy
from ..tracking.loggers import MetricLogger, NullLogger, grad_norm, open_logger
from ..tracking.progress import progress
from . import distributed as dist
from .checkpoint import LAST, Checkpointer, find_resume, restore_training, training_payload
from .devices import PRECISIONS, autocast, compiled_graphs, device_for
from .ema import EMA
from .loaders import EvalLoader, TrainLoader, limit_batches, overfit_subset
from .scoring import score, to_device
from .state import EarlyStopping, TrainState
from .step_checks import StepChecks, TrainMeter
from .stop import StopRequest, signal_name

log = logging.getLogger(__name__)
VALIDATE_RAW = ("never", "final", "always")


@dataclass(frozen=True)
class Stop:
    """Why training ends: max steps or epochs reached, early stopping, or a stop signal every rank agreed on
    (`signum`: then `fit` saves, says how to resume and exits 128 + signum)."""

    reason: str
    signum: int | None = None


class Trainer:
    """Fits a policy on a data object; see conf/trainer/default.yaml for every option."""

    def __init__(self, run_dir: str | Path, max_epochs: int = 10, max_steps: int = -1,
                 accumulate_grad_batches: int = 1, gradient_clip_val: float | None = None,
                 precision: str = "32", val_every_n_epochs: int | None = 1, val_every_n_steps: int | None = None,
                 checkpoint_every_n_steps: int | None = None, limit_train_batches: int | float | None = None,
                 limit_val_batches: int | float | None = None, limit_test_batches: int | float | None = None,
                 fast_dev_run: bool | int = False,
                 overfit_batches: int = 0, log_every_n_steps: int = 50, monitor: str = "val/acc",
                 mode: str = "max", save_top_k: int = 1, save_last: bool = True,
                 early_stopping_patience: int | None = None, early_stopping_min_delta: float = 0.0,
                 resume: str | None = None, overwrite: bool = False, test_after_fit: bool = True,
                 progress_bar: bool = True,
                 accelerator: str = "auto", seed: int = 0, deterministic: bool = False,
                 validate_raw: str = "final", compile: bool = False, compile_backend: str = "inductor",
                 logger: Callable[..., MetricLogger] | None = None, ema: Callable[[nn.Module], EMA] | None = None,
                 run_config: dict[str, Any] | None = None, stop: StopRequest | None = None,
                 trust: Trust = SHIPPED) -> None:
        require_ranges("trainer", locals())  # the ranges validate_config checks (ranges.RANGES)
        precision = str(precision)
        require_choice("trainer.precision", precision, PRECISIONS)
        require_choice("trainer.mode", mode, ("min", "max"))
        require_choice("trainer.validate_raw", validate_raw, VALIDATE_RAW)
        if monitor.startswith("val_raw/") and validate_raw != "always":
            raise ValueError(f"trainer.monitor={monitor} needs the raw weights at every validation: set "
                             f"trainer.validate_raw=always (not {validate_raw})")
        if max_steps <= 0 and (max_epochs is None or max_epochs <= 0):
            raise ValueError("set trainer.max_steps > 0 or trainer.max_epochs > 0 (both are off)")
        if fast_dev_run:
            n = 1 if fast_dev_run is True else int(fast_dev_run)
            max_steps, max_epochs, limit_train_batches, limit_val_batches, limit_test_batches = n, 1, n, n, n
            val_every_n_steps, checkpoint_every_n_steps, accumulate_grad_batches = None, None, 1
        self.run_dir, self.fast_dev_run = Path(run_dir), bool(fast_dev_run)
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.accumulate_grad_batches, self.gradient_clip_val = accumulate_grad_batches, gradient_clip_val
        self.precision = precision
        self.val_every_n_epochs, self.val_every_n_steps = val_every_n_epochs, val_every_n_steps
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.limits = {"train": limit_train_batches, "val": limit_val_batches, "test": limit_test_batches}
        self.overfit_batches, self.log_every_n_steps = overfit_batches, log_every_n_steps  # >= 1: require_ranges
        self.monitor, self.resume, self.test_after_fit = monitor, resume, test_after_fit
        self.progress_bar, self.seed = progress_bar, seed
        self.validate_raw, self.compile, self.compile_backend = validate_raw, compile, compile_backend
        self.logger_factory, self.ema_factory = logger, ema
        self.run_config = run_config or {}
        self.device = device_for(accelerator)
        self.trust = trust  # what a checkpoint's config may build (resume, the best checkpoint): the command's
        self.stop = stop or StopRequest()  # SIGTERM/SIGINT/SIGUSR1: finish the optimizer step, save, exit 128 + signal
        self.writes_checkpoints = not self.fast_dev_run and (save_last or save_top_k != 0)  # the same on every rank
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", monitor, mode, save_top_k, save_last,
                                         enabled=dist.is_main() and self.writes_checkpoints)
        self.last_path = self.checkpointer.directory / LAST
        self.state = TrainState(self.checkpointer, EarlyStopping(self.checkpointer, early_stopping_patience,
                                                                 early_stopping_min_delta))
        self._autocast = functools.partial(autocast, self.device, precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "16")
        self.logger: MetricLogger = NullLogger()
        self.policy: nn.Module | None = None  # the policy; `model` is what is called: it or its DDP wrapper
        self.model: nn.Module | None = None
        self.ema: EMA | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.data: Data | None = None
        self.stopping: Stop | None = None  # the stop decision: set by the trainer only, read by the loop
        self.batches_per_epoch = 0
        self.checks = StepChecks(self.device, self.stop)  # finite losses, stop signals
        self._compiled: nn.Module | None = None
        self._resumed: tuple[dict[str, Any], Path] | None = None

    def _wrap(self) -> None:
        """(Re)wrap in DDP; needed again whenever the set of trainable parameters changes. `trainer.compile`
        compiles the training forward once (checkpoints, EMA and evaluation see the plain policy)."""
        if self.compile and self._compiled is None:
            self._compiled = torch.compile(self.policy, backend=self.compile_backend)
        module = self._compiled if self.compile else self.policy
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(module, device_ids=ids) if dist.is_distributed() else module

    def fit(self, policy: Policy, data: Data, optimizer: torch.optim.Optimizer,
            scheduler: Callable[..., Any] | None = None,
            final_metrics: Callable[[dict[str, Any]], dict[str, float]] | None = None) -> dict[str, float]:
        """Train, validate, checkpoint; then test the best checkpoint. Returns the metrics. `final_metrics` (rank 0)
        adds metrics computed from the final ones (e.g. baselines), logged at the final step."""
        self.final_metrics = final_metrics
        if self.precision == "16" and self.device.type != "cuda":
            raise ValueError("trainer.precision=16 needs a CUDA device; use bf16 or 32 on CPU")
        self.policy, self.optimizer, self.data = policy.to(self.device), optimizer, data
        train_set, val_set = data.dataset("train"), data.dataset("val")
        if train_set is None or len(train_set) == 0:
            raise ValueError("the training split is empty or missing (data.files.train)")
        if self.overfit_batches:
            train_set = val_set = overfit_subset(train_set, self.overfit_batches, data.batch_size)
        pin = self.device.type == "cuda"
        train = TrainLoader(data, train_set, self.seed, pin, plain=bool(self.overfit_batches))
        val = EvalLoader(data, val_set, self.seed, pin, self.limits["val"]) if val_set is not None and len(val_set) \
            else None
        self.batches_per_epoch = limit_batches(self.limits["train"], train.batches_per_epoch())
        per_epoch = -(-self.batches_per_epoch // self.accumulate_grad_batches)  # optimizer steps (ceil)
        total = self.max_steps if self.max_steps > 0 else self.max_epochs * per_epoch
        self.scheduler = scheduler(optimizer, total_steps=total) if scheduler is not None else None
        self.ema = self.ema_factory(self.policy) if self.ema_factory is not None else None
        resumed = self.resume_checkpoint()
        if resumed is not None:
            self._restore(*resumed)
        if dist.is_main() and self.logger_factory is not None:
            self.logger = open_logger(self.logger_factory, self.run_dir, self.state.step if resumed else None,
                                      self.run_config)
        log.info("training %d optimizer steps (%d batches/epoch, accumulate %d) on %s x%d", total,
                 self.batches_per_epoch, self.accumulate_grad_batches, self.device, dist.world_size())
        bar = progress(total, "train", self.progress_bar and dist.is_main(), initial=self.state.step)
        with self.stop:
            try:  # whatever fails (training, the final test, hparams), the loggers are closed (a run ends FAILED)
                try:
                    self._train_loop(train, val, bar)
                finally:
                    bar.close()
                if self.stopping.signum is None:  # a signal that arrived after the last optimizer step
                    late = self.stop.agree(torch.zeros((), dtype=torch.bool, device=self.device))[1]
                    self.stopping = replace(self.stopping, signum=late or None)
                if self.stopping.signum is not None:  # saved: close the logs, say how to resume, exit 128 + signal
                    self.logger.close()
                    saved = self.last_path if self.checkpointer.enabled else None
                    self.stop.exit_after_save(self.stopping.signum, self.state.step, saved, self.run_dir,
                                              dist.is_main())
                return self._finish(data)
            except BaseException:
                self.logger.close()
                raise

    def _finished(self) -> bool:
        """max_steps, when set, decides the length of the run; otherwise max_epochs does."""
        return self.state.step >= self.max_steps if self.max_steps > 0 else self.state.epoch >= self.max_epochs

    def _train_loop(self, train: TrainLoader, val: EvalLoader | None, bar: Any) -> None:
        """Epochs of micro-batches until the stop decision: batch -> forward/backward -> (every
        `accumulate_grad_batches` micro-batches) optimizer step -> log -> validate/save -> stop."""
        meter = TrainMeter(self.device)
        while self.stopping is None and not self._finished():
            batches = self._start_epoch(train, bar)
            while self.state.batch_in_epoch < self.batches_per_epoch and self.stopping is None:
                if not self._forward_backward(next(batches), meter):
                    continue  # accumulating gradients: no optimizer step yet
                norm = self._optimizer_step()
                self._check_and_log(norm, meter, bar)
                self.optimizer.zero_grad(set_to_none=True)  # after logging: histograms show this step's grads
                bar.update(1)
                self._validate_or_save(val, meter)
                self._decide_stop()
            self._end_epoch(val, meter)
        self._end_run(val)

    def _start_epoch(self, train: TrainLoader, bar: Any) -> Iterator[Any]:
        """The model's freezing schedule (re-wrapping when it changes) and this epoch's batches from where the
        run stands (mid-epoch after a resume)."""
        if self.policy.on_epoch_start(self.state.epoch) or self.model is None:
            self._wrap()
        bar.set_description(f"epoch {self.state.epoch}")
        self.model.train()
        return train.epoch(self.state.epoch, self.state.batch_in_epoch, self.seed)

    def _forward_backward(self, batch: Any, meter: TrainMeter) -> bool:
        """One micro-batch: forward under autocast, its loss queued for the finiteness check (not read),
        backward (DDP syncs gradients only on the last micro-batch of a step). True if a step is due."""
        state = self.state
        batch = to_device(batch, self.device)
        state.batch_in_epoch += 1
        is_step = (state.batch_in_epoch % self.accumulate_grad_batches == 0
                   or state.batch_in_epoch == self.batches_per_epoch)
        sync = self.model.no_sync() if isinstance(self.model, DistributedDataParallel) and not is_step \
            else contextlib.nullcontext()
        graphs = compiled_graphs() if self.compile else 0
        with sync:
            with self._autocast():
                loss = self.model(batch)
            self.checks.add(loss, (state.step + 1, state.epoch, state.batch_in_epoch))  # read on log steps
            accumulate = self.accumulate_grad_batches
            self.scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
        meter.add(loss, len(next(iter(batch.values()))))
        if self.compile and compiled_graphs() != graphs:
            meter.restart_clock()  # the compile warm-up is no training throughput
        return is_step

    def _check_and_log(self, norm: torch.Tensor | float | None, meter: TrainMeter, bar: Any) -> None:
        """The step's stop agreement and, on log steps, the finiteness check and the scalars (the only host
        reads of a step that neither logs nor saves: none); weight and gradient histograms when due."""
        step = self.state.step
        log_step = step % self.log_every_n_steps == 0
        self.checks.run(step, log_step, self.last_path)  # validations and saves check anyway
        if log_step:
            scalars = meter.read_scalars(norm, self.state.epoch, self.optimizer.param_groups)
            self.logger.log_scalars(scalars, step)
            bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        hist = self.logger.histogram_every_n_steps
        if hist and step % hist == 0:
            self.logger.log_histograms(self.policy, step)

    def _validate_or_save(self, val: EvalLoader | None, meter: TrainMeter) -> None:
        """`trainer.val_every_n_steps` (validate, then save) or `trainer.checkpoint_every_n_steps` (save)."""
        step = self.state.step
        with meter.paused():
            if val is not None and self.val_every_n_steps and step % self.val_every_n_steps == 0:
                self._validate_and_checkpoint(val)
            elif self.checkpoint_every_n_steps and step % self.checkpoint_every_n_steps == 0:
                self._save(None)

    def _decide_stop(self) -> None:
        """After a step: stop at `trainer.max_steps`, or on the stop signal every rank agreed on (early stopping
        decides at validation); a decision once made stands."""
        if self.stopping is not None:
            return
        if self.max_steps > 0 and self.state.step >= self.max_steps:
            self.stopping = Stop(f"reached trainer.max_steps={self.max_steps}")
        elif signum := self.checks.agreed_signal():
            self.stopping = Stop(f"stopped by {signal_name(signum)}", signum)

    def _end_epoch(self, val: EvalLoader | None, meter: TrainMeter) -> None:
        """An epoch that ran to its end: the next one starts at its first batch; validate (every
        `trainer.val_every_n_epochs`) or save unless this step did already."""
        state = self.state
        if state.batch_in_epoch < self.batches_per_epoch:  # stopped inside the epoch
            return
        state.epoch += 1
        state.batch_in_epoch = 0
        every = self.val_every_n_epochs
        with meter.paused():
            if val is not None and every and state.epoch % every == 0 and state.last_val_step != state.step:
                self._validate_and_checkpoint(val)
            elif state.last_save_step != state.step:
                self._save(None)

    def _end_run(self, val: EvalLoader | None) -> None:
        """The stop decision made final; the step reached saved (a stop signal: validation waits for the
        resumed run) or validated and saved."""
        state = self.state
        if self.stopping is None:
            self.stopping = Stop(f"reached trainer.max_steps={self.max_steps}" if self.max_steps > 0
                                 else f"reached trainer.max_epochs={self.max_epochs}")
        if self.stopping.signum is not None:
            if state.last_save_step != state.step:
                self._save(None, last=True)
            dist.barrier()
        elif val is not None and state.last_val_step != state.step:
            self._validate_and_checkpoint(val)
        elif state.last_save_step != state.step:
            self._save(None)
        log.info("training stopped at step %d (epoch %d): %s", state.step, state.epoch, self.stopping.reason)

    def _optimizer_step(self) -> torch.Tensor | float | None:
        norm = None
        log_step = self.state.step % self.log_every_n_steps == self.log_every_n_steps - 1
        if self.gradient_clip_val or (log_step and self.logger.logs_scalars):
            self.scaler.unscale_(self.optimizer)
            if self.gradient_clip_val:
                # read when logged
                norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.gradient_clip_val)
            else:
                norm = grad_norm(self.policy)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        self.state.step += 1
        self.stop.step = self.state.step
        return norm

    def _finish(self, data: Data) -> dict[str, float]:
        """Final metrics: the last validation, the best monitored value and the test split."""
        metrics = {**self.state.val_metrics, "step": self.state.step, "epoch": self.state.epoch}
        best = self.checkpointer.best_score
        best = self.state.val_metrics.get(self.monitor) if best is None else best  # no checkpoint ranked it
        if best is not None:
            metrics[f"best/{self.monitor}"] = best
        if self.test_after_fit and data.dataset("test") is not None:
            self.checkpointer.load_best(self.policy, self.ema, self.trust)
            metrics.update(self.score_split(data, "test"))
        if self.final_metrics is not None and dist.is_main():
            extra = self.final_metrics(metrics)
            self.logger.log_scalars(extra, self.state.step)
            metrics.update(extra)
        self.logger.log_hparams({k: v for k, v in flatten(self.run_config).items() if not k.startswith("hydra")},
                                {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        self.logger.close()
        return metrics

    def _score(self, loader: EvalLoader, split: str, raw: bool, main: bool = True) -> dict[str, float]:
        """Metrics of a split: `<split>/…` for the weights evaluate/predict use (EMA if on) unless not `main`,
        and with `raw` and EMA on, `<split>_raw/…` for the raw weights."""
        weights = [(split, self.ema.module if self.ema else self.policy)] if main else []
        if self.ema is not None and raw:
            weights.append((f"{split}_raw", self.policy))
        def artifacts(module: nn.Module, state: dict[str, Any], prefix: str) -> None:  # of the main weights
            if prefix == split and dist.is_main():
                module.log_artifacts(state, self.logger, prefix, self.state.step, self.run_dir)

        metrics = score(weights, loader, self.device, self._autocast, self.progress_bar, artifacts)
        self.logger.log_scalars(metrics, self.state.step)
        return metrics

    def _validate_and_checkpoint(self, loader: EvalLoader) -> None:
        """Validate (raw weights too as `trainer.validate_raw` says: always, or at the run's last validation),
        update early stopping, save."""
        self.checks.ensure_checked(self.state.step, self.last_path)  # never validate NaN weights
        final = self.stopping is not None or self._finished()
        raw = self.validate_raw == "always" or (self.validate_raw == "final" and final)
        metrics = self._score(loader, "val", raw)
        if reason := self.state.early_stopping.update(metrics):  # a stop signal agreed already stays
            self.stopping = Stop(reason, self.stopping.signum if self.stopping else None)
        if self.stopping is not None and not raw and self.validate_raw == "final":  # stopped early: final now
            metrics.update(self._score(loader, "val", raw=True, main=False))
        self.state.val_metrics, self.state.last_val_step = metrics, self.state.step
        shown = {*self.policy.summary_metrics(), self.monitor.split("/")[-1]}
        log.info("step %d: %s", self.state.step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                                           if k.split("/")[-1] in shown))
        self._save(metrics)

    def evaluate(self, policy: Policy, data: Data, split: str) -> dict[str, float]:
        """Metrics of given weights on a split (`evaluate`: the caller loads the weights it wants; no EMA)."""
        self.policy, self.ema, self.data = policy.to(self.device), None, data
        return self.score_split(data, split)

    def score_split(self, data: Data, split: str) -> dict[str, float]:
        """Metrics of the current weights on a split (EMA as `<split>/…` when on)."""
        dataset = data.dataset(split)
        if dataset is None or len(dataset) == 0:
            raise ValueError(f"split '{split}' is empty or missing (data.files.{split})")
        loader = EvalLoader(data, dataset, self.seed, self.device.type == "cuda", self.limits["test"])
        return self._score(loader, split, raw=self.validate_raw != "never")

    def _save(self, metrics: dict[str, float] | None, last: bool = False) -> None:
        """Checkpoint on rank 0; every rank contributes its RNG state (same decision on every rank).

        `last=True` writes last.ckpt even with trainer.save_last=false (the save at a stop signal).
        """
        self.checks.ensure_checked(self.state.step, self.last_path)
        self.state.last_save_step = self.state.step
        self.logger.flush()
        if not self.writes_checkpoints:
            self.checkpointer.plan(metrics, self.state.step, self.state.epoch)  # keeps best/<monitor> bookkeeping
            return
        topk, dropped = self.checkpointer.plan(metrics, self.state.step, self.state.epoch)  # ranking includes this one
        run_state = self.state.state_dict(metrics)  # a collective: every rank's RNG state
        if not dist.is_main():
            return
        payload = training_payload(run_state, self.run_config, self.data.state_dict(), policy=self.policy,
                                   ema=self.ema, optimizer=self.optimizer, scheduler=self.scheduler,
                                   scaler=self.scaler)
        self.checkpointer.write(payload, topk, dropped, last=last)

    def resume_checkpoint(self) -> tuple[dict[str, Any], Path] | None:
        """The checkpoint `trainer.resume` points at, loaded once (None: a fresh start); also called before the
        data is built, so that classes and tokenizer come from it."""
        if self.resume and self._resumed is None:
            self._resumed = find_resume(self.resume, self.checkpointer.directory, self.trust)
        return self._resumed

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        ema_kept = restore_training(ckpt, path, self.run_config, policy=self.policy, ema=self.ema,
                                    optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler)
        if self.ema is not None and not ema_kept:
            self.ema = self.ema_factory(self.policy)  # restarts from the loaded weights
        self.state.load_state_dict(ckpt)
        self.stop.step = self.state.step
        log.info("resumed from %s at %s", path, self.state.position())
