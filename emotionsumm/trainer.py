"""The training loop: plain PyTorch, task-agnostic (it only calls the policy protocol).

Owns gradient accumulation, clipping, mixed precision, EMA, validation, early stopping,
checkpointing with exact resume, TensorBoard logging and DDP.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from . import distributed as dist
from .checkpoint import Checkpointer, CheckpointError, latest_checkpoint, load_checkpoint
from .config import flatten
from .ema import EMA
from .interrupt import Interrupted, StopRequest, resume_hint, signal_name
from .loggers import MetricLogger, NullLogger, grad_norm
from .sampling import ShardedSampler
from .seed import rng_state, seed_worker, set_rng_state

log = logging.getLogger(__name__)

PRECISIONS = ("32", "bf16", "16")


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
                 resume: str | None = None, test_after_fit: bool = True, progress_bar: bool = True,
                 accelerator: str = "auto", seed: int = 0, deterministic: bool = False,
                 logger: Callable[..., MetricLogger] | None = None, ema: Callable[[nn.Module], EMA] | None = None,
                 run_config: dict[str, Any] | None = None, stop: StopRequest | None = None) -> None:
        precision = str(precision)
        if precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={precision!r} is not allowed; choose one of {list(PRECISIONS)}")
        if accumulate_grad_batches < 1:
            raise ValueError(f"trainer.accumulate_grad_batches={accumulate_grad_batches} is out of range; "
                             "allowed: >= 1")
        if mode not in ("min", "max"):
            raise ValueError(f"trainer.mode={mode!r} is not allowed; choose 'min' or 'max'")
        if max_steps <= 0 and (max_epochs is None or max_epochs <= 0):
            raise ValueError("set trainer.max_steps > 0 or trainer.max_epochs > 0 (both are off)")
        self.run_dir = Path(run_dir)
        if fast_dev_run:
            n = 1 if fast_dev_run is True else int(fast_dev_run)
            max_steps, max_epochs, limit_train_batches, limit_val_batches, limit_test_batches = n, 1, n, n, n
            val_every_n_steps, checkpoint_every_n_steps, accumulate_grad_batches = None, None, 1
        self.fast_dev_run = bool(fast_dev_run)
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.accumulate = accumulate_grad_batches
        self.clip = gradient_clip_val
        self.precision = precision
        self.val_every_n_epochs, self.val_every_n_steps = val_every_n_epochs, val_every_n_steps
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.limit_train_batches, self.limit_val_batches = limit_train_batches, limit_val_batches
        self.limit_test_batches = limit_test_batches
        self.overfit_batches = overfit_batches
        self.log_every_n_steps = max(1, log_every_n_steps)
        self.monitor, self.mode = monitor, mode
        self.save_top_k, self.save_last = save_top_k, save_last
        self.patience, self.min_delta = early_stopping_patience, early_stopping_min_delta
        self.resume = resume
        self.test_after_fit = test_after_fit
        self.progress_bar = progress_bar
        self.seed, self.deterministic = seed, deterministic
        self.logger_factory = logger
        self.ema_factory = ema
        self.config = run_config or {}
        self.device = self._device(accelerator)

        self.step = self.epoch = self.batch_in_epoch = 0
        self._last_val_step = self._last_save_step = -1  # what happened at the current step already
        self._restored_metrics: dict[str, float] = {}
        self.stop_reason: str | None = None
        self.stop = stop or StopRequest()  # SIGTERM/SIGINT/SIGUSR1: finish the optimizer step, save, exit 128 + signal
        self.interrupted: int | None = None  # the signal every rank agreed to stop on
        self.early = {"best": None, "wait": 0}
        self.logger: MetricLogger = NullLogger()
        self.ema: EMA | None = None
        self.model: nn.Module | None = None

    # ---- set-up -------------------------------------------------------------------------
    @staticmethod
    def _device(accelerator: str) -> torch.device:
        if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if accelerator in ("auto", "cuda", "gpu"):
            import os

            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        raise ValueError(f"trainer.accelerator={accelerator!r} is not allowed; choose auto, cpu or cuda")

    def _limit(self, limit: int | float | None, n: int) -> int:
        if limit is None:
            return n
        if isinstance(limit, float) and limit <= 1.0:
            return max(1, int(n * limit))
        return min(n, int(limit))

    def _loader(self, dataset: Dataset, data: Any, train: bool) -> DataLoader:
        weights = None
        if train and not self.overfit_batches and hasattr(data, "sample_weights"):
            weights = data.sample_weights()  # e.g. class-balanced sampling; None = plain shuffling
        sampler = ShardedSampler(len(dataset), shuffle=train and not self.overfit_batches, seed=self.seed,
                                 rank=dist.rank(), world_size=dist.world_size(), pad=train, weights=weights)
        return DataLoader(dataset, batch_size=data.batch_size if train else data.eval_batch_size, sampler=sampler,
                          collate_fn=data.collate, num_workers=data.num_workers, worker_init_fn=seed_worker,
                          generator=torch.Generator().manual_seed(self.seed), pin_memory=self.device.type == "cuda")

    def _datasets(self, data: Any) -> tuple[Dataset, Dataset | None]:
        train_set, val_set = data.dataset("train"), data.dataset("val")
        if train_set is None or len(train_set) == 0:
            raise ValueError("the training split is empty or missing (data.files.train)")
        if self.overfit_batches:
            train_set = Subset(train_set, range(min(len(train_set), self.overfit_batches * data.batch_size)))
            val_set = train_set
        return train_set, val_set

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps of the whole run (what the scheduler is sized for)."""
        if self.max_steps > 0:
            return self.max_steps
        return self.max_epochs * math.ceil(batches_per_epoch / self.accumulate)

    def _wrap(self, policy: nn.Module) -> None:
        """(Re)wrap in DDP; needed again whenever the set of trainable parameters changes."""
        if not dist.is_distributed():
            self.model = policy
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(policy, device_ids=ids)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ---- fit ----------------------------------------------------------------------------
    def fit(self, policy: nn.Module, data: Any, optimizer: torch.optim.Optimizer,
            scheduler: Callable[..., Any] | None = None) -> dict[str, float]:
        """Train, validate, checkpoint; then test the best checkpoint. Returns the metrics."""
        if self.precision == "16" and self.device.type != "cuda":
            raise ValueError("trainer.precision=16 needs a CUDA device; use bf16 or 32 on CPU")
        self.policy = policy.to(self.device)
        self.optimizer = optimizer
        train_set, val_set = self._datasets(data)
        train_loader = self._loader(train_set, data, train=True)
        val_loader = self._loader(val_set, data, train=False) if val_set is not None and len(val_set) else None
        sampler: ShardedSampler = train_loader.sampler
        self.batches_per_epoch = self._limit(self.limit_train_batches,
                                             math.ceil(sampler.epoch_length() / data.batch_size))
        total = self.total_steps(self.batches_per_epoch)
        self.scheduler = scheduler(optimizer, total_steps=total) if scheduler is not None else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")
        self.ema = self.ema_factory(self.policy) if self.ema_factory is not None else None
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", self.monitor, self.mode, self.save_top_k,
                                         self.save_last, enabled=dist.is_main() and not self.fast_dev_run
                                         and (self.save_last or self.save_top_k != 0))
        self.data = data
        resumed = self.resume_checkpoint()
        if resumed is not None:
            self._restore(*resumed)
        if dist.is_main() and self.logger_factory is not None:
            self.logger = self.logger_factory(log_dir=str(self.run_dir / "tb"),
                                              purge_step=self.step + 1 if resumed else None)
        if self.step == 0 and self.config:
            from omegaconf import OmegaConf

            self.logger.log_text("config", "```yaml\n" + OmegaConf.to_yaml(self.config) + "```", 0)
        log.info("training %d optimizer steps (%d batches/epoch, accumulate %d) on %s x%d", total,
                 self.batches_per_epoch, self.accumulate, self.device, dist.world_size())
        val_metrics: dict[str, float] = {}
        bar = tqdm(total=total, initial=self.step, disable=not (self.progress_bar and dist.is_main()),
                   dynamic_ncols=True, desc="train")
        with self.stop:
            try:
                val_metrics = self._train_loop(train_loader, val_loader, sampler, total, bar)
            except BaseException:
                self.logger.close()
                raise
            finally:
                bar.close()
            if self.interrupted is None:  # a signal that arrived after the last optimizer step
                self.interrupted = self._agreed_signal()
            if self.interrupted is not None:
                self._stop_interrupted()
            return self._finish(data, val_metrics)

    def _agreed_signal(self) -> int | None:
        """The stop signal of any rank (one all-reduce under DDP), None if no rank got one."""
        signum = torch.tensor(float(self.stop.signum or 0), device=self.device)
        if dist.is_distributed():
            torch.distributed.all_reduce(signum, op=torch.distributed.ReduceOp.MAX)
        return int(signum) or None

    def _stop_interrupted(self) -> None:
        """After the save at a signal: say how to resume, close the logs, exit 128 + signal."""
        assert self.interrupted is not None
        self.logger.close()
        at = self.stop.signal_step
        log.warning("stopped by %s at step %d%s; %s; resume with: %s", signal_name(self.interrupted), self.step,
                    f" (signal received at step {at})" if at is not None and at != self.step else "",
                    f"{self.run_dir / 'checkpoints' / 'last.ckpt'} holds step {self.step}"
                    if self.checkpointer.enabled else "checkpoints are off, nothing was saved",
                    resume_hint(self.run_dir))
        if dist.is_main():
            self.stop.chain_requeue()
        raise Interrupted(self.interrupted, self.step)

    def _finish(self, data: Any, val_metrics: dict[str, float]) -> dict[str, float]:
        """Final metrics: the last validation, the best monitored value and the test split."""
        metrics = dict(val_metrics)
        metrics.update({"step": self.step, "epoch": self.epoch})
        if self.checkpointer.best_score is not None:
            metrics[f"best/{self.monitor}"] = self.checkpointer.best_score
        elif self.monitor in val_metrics:
            metrics[f"best/{self.monitor}"] = val_metrics[self.monitor]
        if self.test_after_fit and data.dataset("test") is not None:
            self._load_best()
            metrics.update(self.test(data, "test"))
        self.logger.log_hparams({k: v for k, v in flatten(self.config).items() if not k.startswith("hydra")},
                                {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        self.logger.close()
        return metrics

    def _finished(self) -> bool:
        """max_steps, when set, decides the length of the run; otherwise max_epochs does."""
        if self.max_steps > 0:
            return self.step >= self.max_steps
        return self.epoch >= self.max_epochs

    def _train_loop(self, train_loader: DataLoader, val_loader: DataLoader | None, sampler: ShardedSampler,
                    total: int, bar: tqdm) -> dict[str, float]:
        val_metrics: dict[str, float] = dict(self._restored_metrics)
        running = torch.zeros((), dtype=torch.float64, device=self.device)
        micro_since_log, samples_since_log, t_log = 0, 0, time.perf_counter()
        while self.stop_reason is None and not self._finished():
            if self._policy_changed_trainable() or self.model is None:
                self._wrap(self.policy)
            sampler.set_epoch(self.epoch)
            sampler.set_start(self.batch_in_epoch * train_loader.batch_size)
            train_loader.generator.manual_seed(self.seed * 100003 + self.epoch)
            bar.set_description(f"epoch {self.epoch}")
            self.model.train()
            batch_iter = iter(train_loader)
            stop_signal = 0
            while self.batch_in_epoch < self.batches_per_epoch and self.stop_reason is None:
                batch = self._to_device(next(batch_iter))
                self.batch_in_epoch += 1
                is_step = self.batch_in_epoch % self.accumulate == 0 or self.batch_in_epoch == self.batches_per_epoch
                sync = contextlib.nullcontext()
                if isinstance(self.model, DistributedDataParallel) and not is_step:
                    sync = self.model.no_sync()
                with sync:
                    with self._autocast():
                        loss = self.model(batch)
                    stop_signal = self._check_finite(loss)
                    self.scaler.scale(loss / self.accumulate if self.accumulate > 1 else loss).backward()
                running += loss.detach()
                micro_since_log += 1
                samples_since_log += len(next(iter(batch.values())))
                if not is_step:
                    continue
                norm = self._optimizer_step()
                if self.step % self.log_every_n_steps == 0:
                    loss_avg = self._reduce_mean(running / micro_since_log)
                    elapsed = time.perf_counter() - t_log
                    scalars = {"train/loss": loss_avg, "train/epoch": self.epoch,
                               "train/samples_per_s": samples_since_log * dist.world_size() / elapsed}
                    if norm is not None:
                        scalars["train/grad_norm"] = norm
                    for group in self.optimizer.param_groups:
                        scalars[f"lr/{group.get('name', 'default')}"] = group["lr"]
                    self.logger.log_scalars(scalars, self.step)
                    bar.set_postfix(loss=f"{loss_avg:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                    running.zero_()
                    micro_since_log, samples_since_log, t_log = 0, 0, time.perf_counter()
                hist = self.logger.histogram_every_n_steps
                if hist and self.step % hist == 0:
                    self.logger.log_histograms(self.policy, self.step)
                self.optimizer.zero_grad(set_to_none=True)
                bar.update(1)
                if self.max_steps > 0 and self.step >= self.max_steps:
                    self.stop_reason = f"reached trainer.max_steps={self.max_steps}"
                if val_loader is not None and self.val_every_n_steps and self.step % self.val_every_n_steps == 0:
                    val_metrics = self._validate_and_checkpoint(val_loader)
                elif self.checkpoint_every_n_steps and self.step % self.checkpoint_every_n_steps == 0:
                    self._save(None)
                if not dist.is_distributed():  # one process: no need to agree, stop right after this step
                    stop_signal = self.stop.signum or 0
                if stop_signal and self.stop_reason is None:
                    self.interrupted = stop_signal
                    self.stop_reason = f"stopped by {signal_name(stop_signal)}"
            if self.batch_in_epoch >= self.batches_per_epoch:  # the epoch ran to its end
                self.epoch += 1
                self.batch_in_epoch = 0
                every = self.val_every_n_epochs
                if val_loader is not None and every and self.epoch % every == 0 and self._last_val_step != self.step:
                    val_metrics = self._validate_and_checkpoint(val_loader)
                elif self._last_save_step != self.step:
                    self._save(None)
        if self.stop_reason is None:
            self.stop_reason = (f"reached trainer.max_steps={self.max_steps}" if self.max_steps > 0
                                else f"reached trainer.max_epochs={self.max_epochs}")
        if self.interrupted is not None:  # save the step reached; validation waits for the resumed run
            if self._last_save_step != self.step:
                self._save(None, last=True)
            dist.barrier()
        elif val_loader is not None and self._last_val_step != self.step:
            val_metrics = self._validate_and_checkpoint(val_loader)
        elif self._last_save_step != self.step:
            self._save(None)
        log.info("training stopped at step %d (epoch %d): %s", self.step, self.epoch, self.stop_reason)
        return val_metrics

    def _policy_changed_trainable(self) -> bool:
        hook = getattr(self.policy, "on_epoch_start", None)
        return bool(hook(self.epoch)) if hook else False

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _check_finite(self, loss: torch.Tensor) -> int:
        """Raise if the loss is not finite on any rank; return the stop signal the ranks agree on (0: none).

        Both travel in one all-reduce, so stopping together costs no extra collective.
        """
        bad = (~torch.isfinite(loss.detach())).float().reshape(())
        stop_signal = 0.0
        if dist.is_distributed():
            flags = torch.stack([bad, torch.tensor(float(self.stop.signum or 0), device=bad.device)])
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            bad, stop_signal = flags.tolist()
        if bad:
            last = self.run_dir / "checkpoints" / "last.ckpt"
            kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
            raise FloatingPointError(
                f"loss is {loss.item()} at optimizer step {self.step + 1} (epoch {self.epoch}, batch "
                f"{self.batch_in_epoch}); training stopped and {kept}. Lower optimizer.lr, set "
                "trainer.gradient_clip_val, or check the data."
            )
        return int(stop_signal)

    def _optimizer_step(self) -> float | None:
        norm = None
        log_step = self.step % self.log_every_n_steps == self.log_every_n_steps - 1
        if self.clip or (log_step and not isinstance(self.logger, NullLogger)):
            self.scaler.unscale_(self.optimizer)
            if self.clip:
                norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.clip))
            else:
                norm = grad_norm(self.policy)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        self.stop.step = self.step
        return norm

    def _reduce_mean(self, value: torch.Tensor) -> float:
        value = value.detach().clone()
        if dist.is_distributed():
            torch.distributed.all_reduce(value)
            value /= dist.world_size()
        return float(value)

    # ---- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, module: nn.Module, loader: DataLoader, limit: int | float | None,
                  desc: str) -> dict[str, torch.Tensor]:
        was_training = module.training
        module.eval()
        state = module.eval_state()
        n = self._limit(limit, len(loader))
        bar = tqdm(total=n, desc=desc, leave=False, dynamic_ncols=True,
                   disable=not (self.progress_bar and dist.is_main()))
        with self._autocast():
            for i, batch in enumerate(loader):
                if i >= n:
                    break
                module.evaluation_step(self._to_device(batch), state)
                bar.update()
        bar.close()
        module.train(was_training)
        if dist.is_distributed():  # tensors are summed; lists (e.g. generated texts) are concatenated in rank order
            tensors = {k: v.to(self.device) for k, v in state.items() if torch.is_tensor(v)}
            reduced = {k: v.cpu() for k, v in dist.all_reduce_sum(tensors).items()}
            lists = {k: [x for part in dist.gather_object(v) for x in part] for k, v in state.items()
                     if isinstance(v, list)}
            state = {**reduced, **lists}
        return state

    def _evaluate_weights(self, loader: DataLoader, split: str, limit: int | float | None) -> dict[str, float]:
        """`<split>/…` for the weights evaluate/predict use (EMA if on), `<split>_raw/…` for raw."""
        candidates = [(split, self.ema.module if self.ema else self.policy)]
        if self.ema is not None:
            candidates.append((f"{split}_raw", self.policy))
        metrics: dict[str, float] = {}
        for prefix, module in candidates:
            state = self._evaluate(module, loader, limit, desc=prefix)
            values = module.compute_metrics(state)
            metrics.update({f"{prefix}/{k}": v for k, v in values.items()})
            if prefix == split and dist.is_main():
                module.log_artifacts(state, self.logger, prefix, self.step, self.run_dir)
        self.logger.log_scalars(metrics, self.step)
        return metrics

    def _validate_and_checkpoint(self, loader: DataLoader) -> dict[str, float]:
        metrics = self._evaluate_weights(loader, "val", self.limit_val_batches)
        self._last_val_step = self.step
        shown = {"acc", "macro_f1", "loss", "encoder_gain", self.monitor.split("/")[-1]}  # + the monitored one
        log.info("step %d: %s", self.step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                                     if k.split("/")[-1] in shown))
        self._update_early_stopping(metrics)
        self._save(metrics)
        return metrics

    def _update_early_stopping(self, metrics: dict[str, float]) -> None:
        if not self.patience or self.monitor not in metrics:
            return
        score, best = metrics[self.monitor], self.early["best"]
        if best is None:
            better = True
        else:
            better = score > best + self.min_delta if self.mode == "max" else score < best - self.min_delta
        if better:
            self.early = {"best": score, "wait": 0}
        else:
            self.early["wait"] += 1
            if self.early["wait"] >= self.patience:
                self.stop_reason = (f"early stopping: {self.monitor} did not improve by more than "
                                    f"{self.min_delta} for {self.patience} validations (best {best:.4f})")

    def evaluate(self, policy: nn.Module, data: Any, split: str) -> dict[str, float]:
        """Evaluate given weights on a split (no EMA: the caller loads the weights it wants)."""
        self.policy, self.ema, self.data = policy.to(self.device), None, data
        return self.test(data, split)

    def test(self, data: Any, split: str = "test") -> dict[str, float]:
        """Evaluate a split with the current weights (EMA as `<split>/…` when on)."""
        dataset = data.dataset(split)
        if dataset is None or len(dataset) == 0:
            raise ValueError(f"split '{split}' is empty or missing (data.files.{split})")
        loader = self._loader(dataset, data, train=False)
        return self._evaluate_weights(loader, split, self.limit_test_batches)

    # ---- checkpoints --------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "version": 1,
            "policy": self.policy.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "ema_updates": self.ema.num_updates if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "callbacks": {"checkpointer": self.checkpointer.state_dict(), "early_stopping": dict(self.early)},
            "config": self.config,
            "data": self.data.state_dict(),
            "world_size": dist.world_size(),
        }

    def _save(self, metrics: dict[str, float] | None, last: bool = False) -> None:
        """Checkpoint on rank 0; every rank contributes its RNG state (same decision on every rank).

        `last=True` writes last.ckpt even with trainer.save_last=false (the save at a stop signal).
        """
        self._last_save_step = self.step
        self.logger.flush()
        if self.fast_dev_run or (not self.save_last and self.save_top_k == 0):
            self.checkpointer.plan(metrics, self.step, self.epoch)  # keeps best/<monitor> bookkeeping
            return
        rngs = dist.gather_object(rng_state())
        if not dist.is_main():
            self.checkpointer.plan(metrics, self.step, self.epoch)
            return
        topk, dropped = self.checkpointer.plan(metrics, self.step, self.epoch)
        payload = self._payload()
        payload["rng"] = rngs
        payload["metrics"] = metrics or {}
        self.checkpointer.write(payload, topk, dropped, last=last)

    def resume_checkpoint(self) -> tuple[dict[str, Any], Path] | None:
        """The checkpoint `trainer.resume` points at, loaded once (None for a fresh start).

        Called before the data is built too, so that classes and tokenizer come from it.
        """
        if not self.resume:
            return None
        if getattr(self, "_resumed", None) is None:
            if str(self.resume) == "auto":
                path = latest_checkpoint(self.run_dir / "checkpoints")
                if path is None:
                    log.info("trainer.resume=auto: no checkpoint in %s, starting fresh", self.run_dir / "checkpoints")
                    return None
            else:
                path = Path(str(self.resume)).expanduser()
            self._resumed = (load_checkpoint(path, key="trainer.resume"), path)
        return self._resumed

    def _check_config(self, saved: dict[str, Any], path: Path) -> list[str]:
        """Log every config change since the checkpoint; return the changed `model.*` keys."""
        old, new = flatten(saved), flatten(self.config)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith("hydra"))
        for key in changed:
            log.warning("resuming %s with a changed config: %s: %r -> %r", path.name, key, old.get(key), new.get(key))
        return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed if k.startswith("model.")]

    def _load_policy(self, state: dict[str, torch.Tensor], path: Path, model_changes: list[str]) -> None:
        """Load weights; a shape or key mismatch names the file and the model config changes."""
        current = self.policy.state_dict()
        problems = [f"{k}: {tuple(v.shape)} in checkpoint vs {tuple(current[k].shape)} now"
                    for k, v in state.items() if k in current and v.shape != current[k].shape]
        problems += [f"{k}: missing in checkpoint" for k in current if k not in state]
        problems += [f"{k}: not in the model" for k in state if k not in current]
        if problems:
            hint = f" The model config changed: {'; '.join(model_changes)}." if model_changes else ""
            raise CheckpointError(f"trainer.resume: {path} does not fit the configured model "
                                  f"({'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}).{hint} "
                                  "Resume with the checkpoint's model config or start a new run.")
        self.policy.load_state_dict(state)

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        model_changes = self._check_config(ckpt["config"], path) if self.config else []
        self._load_policy(ckpt["policy"], path, model_changes)
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
            else:
                log.warning("%s has no EMA state: the EMA restarts from the loaded weights", path)
                self.ema = self.ema_factory(self.policy)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self._restored_metrics = dict(ckpt.get("metrics") or {})
        self._last_save_step = self.step
        self._last_val_step = self.step if self._restored_metrics else -1
        self.batch_in_epoch = int(ckpt.get("batch_in_epoch", 0))
        callbacks = ckpt.get("callbacks", {})
        if "checkpointer" in callbacks:
            self.checkpointer.load_state_dict(callbacks["checkpointer"])
        self.early = dict(callbacks.get("early_stopping", self.early))
        rngs = ckpt.get("rng") or []
        if ckpt.get("world_size", 1) != dist.world_size():
            log.warning("%s was written by %s ranks, resuming on %d: data order and RNG streams differ",
                        path, ckpt.get("world_size"), dist.world_size())
        if dist.rank() < len(rngs):
            set_rng_state(rngs[dist.rank()])
        self.stop.step = self.step
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    def _load_best(self) -> None:
        """Load the best top-k checkpoint's weights (if any) before testing."""
        best = self.checkpointer.best_path if dist.is_main() else None
        best = dist.broadcast_object(str(best) if best else None)
        if not best or not Path(best).is_file():
            return
        ckpt = load_checkpoint(best, key="best checkpoint")
        self.policy.load_state_dict(ckpt["policy"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
        log.info("testing the best checkpoint %s", best)
