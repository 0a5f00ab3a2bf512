"""Graceful stop on SIGTERM, SIGINT and SIGUSR1 (preemption, time limits, Ctrl-C).

A handler only records the signal; the trainer acts on it at the next optimizer-step boundary (under
DDP at the one after, when every rank has heard of it without waiting for the device):
it saves `last.ckpt`, logs how to resume and raises `Interrupted`, a SystemExit with status
128 + signal number (the shell's convention for "killed by a signal"). A second Ctrl-C aborts at
once. A signal before training starts (imports, data loading) exits 128 + signal at once, saying
what was written (`StoppedEarly`). Under submitit (`launcher=slurm|submitit_local`) its preemption
signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise) is handled the same way, and submitit's own handler is
called after the save so that the job is requeued and resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Interrupted(SystemExit):
    """Training stopped by a signal after saving: exit status 128 + signal number.

    A SystemExit so that Hydra neither prints a traceback nor records a failed job: an
    interrupted sweep job is unfinished and a rerun of the sweep resumes it.
    """

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(128 + signum)
        self.signum, self.step = signum, step


class StoppedEarly(SystemExit):
    """A stop signal before training started (imports, config, data loading): exit 128 + signal at once.

    Nothing is saved because nothing was trained; `reported` once the message naming what was written is out.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum, self.reported = signum, False


def _stop_early(signum: int, frame: FrameType | None) -> None:
    raise StoppedEarly(signum)


def _stop_while_importing(signum: int, frame: FrameType | None) -> None:
    print(f"stopped by {signal_name(signum)} before training; nothing was written", file=sys.stderr)
    early = StoppedEarly(signum)
    early.reported = True
    raise early


def install_early_stop(importing: bool = False) -> None:
    """Until `train` installs its StopRequest, a stop signal raises StoppedEarly (main thread only).

    `importing`: the entry point's own imports, where no caller can catch it; the handler says it itself.
    """
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _stop_while_importing if importing else _stop_early)


def disarm_early_stop() -> None:
    """After `train`: a signal no longer means 'before training' (the default action is back)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) in (_stop_early, _stop_while_importing):
                signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _preempt_signal() -> int | None:
    """submitit's preemption signal when this process runs a submitit job with its handler set."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    signum = getattr(signal, name, None)
    if signum is None or not callable(signal.getsignal(signum)):
        return None
    return int(signum)


class StopRequest:
    """Records the first stop signal while installed (a re-entrant context manager, main thread only).

    `train` installs it before the data is built with `setting_up` set (one process; under DDP the ranks
    agree to stop after the first step), and clears that just before the trainer's fit: a signal before then
    raises StoppedEarly at once (nothing was trained, nothing to save).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.step = 0  # the trainer's optimizer step, kept current so a signal can note where it arrived
        self.signal_step: int | None = None
        self._previous: dict[int, Any] = {}
        self._preempt: int | None = None
        self._depth = 0
        self._pending: _HostCopy | None = None  # the latest agreement, not read yet
        self.setting_up = False  # a signal while set raises StoppedEarly at once

    def __enter__(self) -> StopRequest:
        self._depth += 1
        if self._depth > 1 or threading.current_thread() is not threading.main_thread():
            return self  # installed already; or not the main thread, where no handler can be set
        self._preempt = _preempt_signal()
        for signum in (*STOP_SIGNALS, *([self._preempt] if self._preempt else [])):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                log.error("second SIGINT: aborting at once, without saving")
                raise KeyboardInterrupt
            return
        if self.setting_up:
            raise StoppedEarly(signum)
        self.signum, self.signal_step = signum, self.step
        log.warning("received %s: finishing the current optimizer step, then saving and stopping%s",
                    signal_name(signum), " (Ctrl-C again aborts at once)" if signum == signal.SIGINT else "")

    def agree(self, nonfinite: torch.Tensor, wait: bool = True) -> tuple[bool, int]:
        """(some rank's loss was not finite, some rank's stop signal or 0): one all-reduce under DDP, which
        the trainer does once per optimizer step anyway (for the finiteness check), so stopping together
        costs no extra collective. `nonfinite` is cumulative and a signal stays set, so a later answer
        contains every earlier one.

        `wait=False` starts this step's reduction and answers with the previous step's, whose result is
        on its way to pinned host memory already: the host never waits for the step it just queued (every
        rank reads the same step's answer, so all stop at the same step, one step after the signal).
        Without DDP there is nothing to agree: the signal is this process's and `nonfinite` is read only
        when waiting.
        """
        import torch

        from . import distributed as dist

        if not dist.is_distributed():
            return (bool(nonfinite) if wait else False), self.signum or 0
        flags = torch.stack([nonfinite.float().reshape(()), nonfinite.new_full((), float(self.signum or 0),
                                                                               dtype=torch.float32)])
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        previous, self._pending = self._pending, _HostCopy(flags)
        answer = self._pending if wait else previous
        if answer is None:
            return False, 0
        if wait:
            self._pending = None
        bad, signum = answer.values()
        return bool(bad), int(signum)

    def exit_after_save(self, signum: int, step: int, saved: Path | None, run_dir: Path, main: bool) -> None:
        """Say which signal stopped the run where, and how to resume; requeue under submitit; exit 128 + signal."""
        at = self.signal_step
        log.warning("stopped by %s at step %d%s; %s; resume with: %s", signal_name(signum), step,
                    f" (signal received at step {at})" if at is not None and at != step else "",
                    f"{saved} holds step {step}" if saved else "checkpoints are off, nothing was saved",
                    resume_hint(run_dir))
        if main:
            self._chain_requeue()
        raise Interrupted(signum, step)

    def _chain_requeue(self) -> None:
        """After the save: hand a submitit preemption signal to submitit, which requeues the job."""
        handler: Callable[[int, FrameType | None], Any] | None = self._previous.get(self.signum or -1)
        if self.signum is not None and self.signum == self._preempt and callable(handler):
            log.info("handing %s to submitit: the job is requeued and resumes from last.ckpt",
                     signal_name(self.signum))
            handler(self.signum, None)


class _HostCopy:
    """A device tensor on its way to host memory: pinned and asynchronous on CUDA, the tensor itself on CPU."""

    def __init__(self, tensor: torch.Tensor) -> None:
        import torch

        self.event = None
        if tensor.device.type == "cuda":
            self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.host.copy_(tensor, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = tensor

    def values(self) -> list[float]:
        """The values, once the copy has arrived (waits for the work queued up to the copy, not after it)."""
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()


def resume_hint(run_dir: Path) -> str:
    """The command that resumes this run (or sweep) from its last checkpoint."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return f"trainer.resume={run_dir / 'checkpoints' / 'last.ckpt'}"
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return (f"rerun the same multirun command with hydra.sweep.dir={hydra_cfg.sweep.dir}: "
                "this job resumes from its last.ckpt")
    overrides = [o for o in hydra_cfg.overrides.task
                 if not o.lstrip("+~").startswith(("trainer.resume=", "hydra.run.dir="))]
    # the lab's config dirs (a resume must compose, and trust, the same configs)
    config_dirs = [arg for s in hydra_cfg.runtime.config_sources if s.provider == "command-line"
                   for arg in ("--config-dir", s.path)]
    searchpath = [o for o in hydra_cfg.overrides.hydra if o.startswith("hydra.searchpath=")]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # the interpreter that ran this (a venv's python), not whichever `python` a shell finds
    launcher = (f"torchrun --nproc_per_node={world} -m emotionsumm.train" if world > 1
                else f"{shlex.quote(sys.executable)} -m emotionsumm.train")
    return " ".join([launcher, *map(shlex.quote, [*config_dirs, *searchpath, *overrides, f"hydra.run.dir={run_dir}"]),
                     "trainer.resume=auto"])
