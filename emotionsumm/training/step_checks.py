"""What the trainer watches between two reads, on the device (no host sync per step): the running
training loss and throughput (`TrainMeter`), and whether every loss was finite (`StepChecks`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import distributed as dist

if TYPE_CHECKING:
    from .stop import StopRequest


class TrainMeter:
    """Sums losses on the device and reads them once per log step; time spent paused (validation,
    checkpoints, the compile warm-up) does not count towards samples/s."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.micro_batches = self.samples = 0
        self.since = time.perf_counter()

    def add(self, loss: torch.Tensor, samples: int) -> None:
        self.loss_sum += loss.detach()
        self.micro_batches += 1
        self.samples += samples

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent inside out of the throughput."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.since += time.perf_counter() - start

    def restart_clock(self) -> None:
        """Count throughput from now on (e.g. after the compile warm-up), keeping the losses."""
        self.samples, self.since = 0, time.perf_counter()

    def read(self) -> tuple[float, float | None]:
        """(mean loss over every rank's micro-batches since the last read, samples/s of all ranks or None when
        the clock restarted after the last sample); then reset."""
        loss = self.loss_sum / max(1, self.micro_batches)
        if dist.is_distributed():
            torch.distributed.all_reduce(loss)
            loss /= dist.world_size()
        elapsed = max(time.perf_counter() - self.since, 1e-9)
        out = float(loss), self.samples * dist.world_size() / elapsed if self.samples else None
        self.loss_sum.zero_()
        self.micro_batches = self.samples = 0
        self.since = time.perf_counter()
        return out

    def read_scalars(self, norm: torch.Tensor | float | None, epoch: int, groups: list[dict]) -> dict[str, float]:
        """What a log step logs: loss, epoch, samples/s (unless the clock restarted), grad norm, learning rates."""
        loss, samples_per_s = self.read()
        scalars = {"train/loss": loss, "train/epoch": epoch}
        if samples_per_s is not None:
            scalars["train/samples_per_s"] = samples_per_s
        if norm is not None:
            scalars["train/grad_norm"] = float(norm)
        scalars.update({f"lr/{group.get('name', 'default')}": group["lr"] for group in groups})
        return scalars


class StepChecks:
    """Once per optimizer step: the stop signal the ranks agree on (`agreed_signal`), and, when `wait`ing (on
    log steps, before validations and saves), an error if a loss since the last check was not finite on
    any rank. The losses stay on the device in between: steps that do not wait read nothing on the host
    (under DDP they read the previous step's agreement, which has arrived by then).
    """

    def __init__(self, device: torch.device, stop: StopRequest) -> None:
        self.stop = stop
        self.losses: list[torch.Tensor] = []  # since the last check
        self.positions: list[tuple[int, int, int]] = []  # (optimizer step, epoch, batch in epoch) of each
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.checked_step = -1  # the latest step whose losses were checked on the host
        self._agreed = 0  # the stop signal every rank agreed on at a check (0: none)

    def add(self, loss: torch.Tensor, position: tuple[int, int, int]) -> None:
        loss = loss.detach().float().reshape(())
        self.bad |= ~torch.isfinite(loss)
        self.losses.append(loss)
        self.positions.append(position)

    def run(self, step: int, wait: bool, last: Path) -> None:
        """Agree (`StopRequest.agree`); raise when a loss was not finite. `last`: the last checkpoint's path."""
        bad, stop_signal = self.stop.agree(self.bad, wait)
        self._agreed = self._agreed or stop_signal
        if bad:
            raise self._error(step, last)
        if wait:
            self.losses.clear()
            self.positions.clear()
            self.checked_step = step

    def agreed_signal(self) -> int:
        """The stop signal every rank agreed on so far (0: none); one process has nothing to agree on: its own
        signal, so that it stops right after the step the signal arrived in."""
        return self._agreed if dist.is_distributed() else self.stop.signum or 0

    def ensure_checked(self, step: int, last: Path) -> None:
        """Wait for the check of `step` unless it happened (e.g. before a save: no checkpoint ever holds
        weights that a non-finite loss went into)."""
        if self.checked_step != step:
            self.run(step, True, last)

    def _error(self, step: int, last: Path) -> FloatingPointError:
        """Where the first non-finite loss happened, what is kept, what to do."""
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        losses = torch.stack(self.losses) if self.losses else torch.zeros(0)
        bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()
        if bad:
            (at, epoch, batch), value = self.positions[bad[0]], float(losses[bad[0]])
            what = f"loss is {value} at optimizer step {at} (epoch {epoch}, batch {batch})"
        else:
            since = self.positions[0][0] if self.positions else step
            what = f"loss is not finite on another rank at optimizer steps {since}-{step}"
        return FloatingPointError(f"{what}; training stopped and {kept}. Lower optimizer.lr, set "
                                  "trainer.gradient_clip_val, or check the data.")
