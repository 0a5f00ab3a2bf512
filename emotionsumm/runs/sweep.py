"""Sweeps that survive interruption: stable job dirs, jobs that skip or resume, failures recorded.

A job's dir is `<job number>-<hash of its overrides>` (`layout.job_subdir`) and is found again by the
hash, so rerunning the same multirun command with the same `hydra.sweep.dir` (even with a grown grid)
maps each job to its old dir: a job with a metrics.json is skipped, any other resumes from its last
checkpoint (`trainer.resume=auto`). A failing job writes `error.txt` instead of stopping the sweep;
`SweepCallback` checks the sweep before it starts and lists the failures when it ends. A stop signal to
the launcher (basic, joblib) stops the running jobs the graceful way (SIGTERM: they save last.ckpt) before
it exits, and a joblib worker whose launcher died (even by SIGKILL) stops the same way and exits.

Light on purpose (no torch): the callback is imported by Hydra before any job runs.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..config.core import RUN_STAMP_ENV, env_world_size, flatten, run_stamp
from ..training.stop import STOP_SIGNALS, StoppedEarly, signal_name
from . import layout
from .guard import RunDirHasResults, check_run_dir
from .layout import ERROR_FILE, METRICS_FILE, MLFLOW_RUN_FILE, load_jobs, swept_keys

log = logging.getLogger(__name__)


class SweepError(SystemExit):
    """A sweep that cannot start, or that ended with failed jobs: exit status 1 and only the message.

    A SystemExit because Hydra turns any Exception raised by a callback into a mere warning.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def current_sweep_dir() -> Path | None:
    """The dir of the multirun this job belongs to (None for a single run)."""
    return Path(str(HydraConfig.get().sweep.dir)) if in_multirun() else None


def sweeper_result(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """What a job returns to the sweeper: `layout.objective_value` of its `trainer.monitor`."""
    return layout.objective_value(cfg.trainer.monitor, metrics)


def run_sweep_job(cfg: DictConfig, train: Callable[[DictConfig], dict[str, float]]) -> float | None:
    """One job of a multirun: skip it if finished, resume it if started, record (not raise) a failure.

    Returns the objective, or None for a failed job (the Optuna sweeper marks that trial failed).
    """
    run_dir = Path(cfg.paths.output_dir)
    done = run_dir / METRICS_FILE
    if done.is_file():
        log.info("skipping finished job %s (%s exists)", run_dir.name, done)
        return sweeper_result(cfg, json.loads(done.read_text()))
    try:  # a smoke run (fast_dev_run) never resumes a started job and passes for its results
        check_run_dir(run_dir, {**cfg.trainer, "resume": "auto"})
    except RunDirHasResults as err:
        log.error("skipping job %s: %s", run_dir.name, str(err.code).removeprefix("error: "))
        return None
    from ..training import distributed as dist

    if env_world_size() > 1:  # one task per GPU started by SLURM (launcher=slurm)
        dist.init_from_env()
    worker = _restore_start_method()
    from .lock import run_dir_lock

    # a second launcher of the same sweep stops here (RunDirInUse); a signal (Interrupted) is no failure
    with (_launcher_watched() if worker else contextlib.nullcontext(),
          run_dir_lock(run_dir) if dist.is_main() else contextlib.nullcontext()):
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        if cfg.trainer.get("resume") is None:
            cfg.trainer.resume = "auto"
        try:
            return sweeper_result(cfg, train(cfg))
        except Exception:
            overrides = " ".join(HydraConfig.get().overrides.task)
            log.exception("job %s failed (overrides: %s); the sweep carries on", run_dir.name, overrides)
            if dist.is_main():
                from .atomic import atomic_write_text

                atomic_write_text(f"overrides: {overrides}\n\n{traceback.format_exc()}", run_dir / ERROR_FILE)
            return None


_in_loky_worker = False
_launcher_gone = threading.Event()  # in a joblib worker: the sweep's launcher died (even by SIGKILL)
_job_running = threading.Event()


def _restore_start_method() -> bool:
    """A joblib (loky) worker makes loky multiprocessing's default start method, and DataLoader workers
    cannot start loky processes: give this job the platform default back (fork on Linux). True in such a worker."""
    import multiprocessing

    global _in_loky_worker
    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method(None, force=True)
        _in_loky_worker = True
    return _in_loky_worker


@contextlib.contextmanager
def _launcher_watched() -> Iterator[None]:
    """A job in a joblib (loky) worker: stops like on SIGTERM (saving last.ckpt) when the launcher dies, and
    this orphaned worker exits after it; a stop signal before `train` is ready stops at once (StoppedEarly)."""
    _watch_launcher()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:  # a SIGTERM forwarded by the launcher never kills a worker (joblib would kill
        signal.signal(signum, _stop_job)  # the others at once); `train` handles it the graceful way meanwhile
    _job_running.set()
    try:
        if _launcher_gone.is_set():
            raise SystemExit(128 + signal.SIGTERM)
        yield
    finally:
        _job_running.clear()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if _launcher_gone.is_set():  # nobody waits for this worker's results: exit instead of idling
            logging.shutdown()
            os._exit(128 + signal.SIGTERM)


def _stop_job(signum: int, frame: FrameType | None) -> None:
    raise StoppedEarly(signum)


def _watch_launcher() -> None:
    """Start (once per worker) a daemon thread that notices when the launcher process is gone."""
    if any(t.name == "watch-sweep-launcher" for t in threading.enumerate()):
        return
    threading.Thread(target=_poll_launcher, args=(os.getppid(),), daemon=True, name="watch-sweep-launcher").start()


def _poll_launcher(launcher: int, every: float = 0.5) -> None:
    while os.getppid() == launcher:
        time.sleep(every)
    _launcher_gone.set()
    if not _job_running.is_set():
        os._exit(128 + signal.SIGTERM)
    log.warning("the sweep's launcher (PID %d) is gone: stopping this job as on SIGTERM", launcher)
    os.kill(os.getpid(), signal.SIGTERM)


def _stop_sweep(sweep_dir: Path) -> Callable[[int, FrameType | None], None]:
    """The launcher's handler of a stop signal (joblib and basic launchers): stop every running job the graceful
    way (SIGTERM: it saves last.ckpt), wait for them, say which and how to resume, exit 128 + signal."""

    def handle(signum: int, frame: FrameType | None) -> None:
        from .lock import holder

        for sig in STOP_SIGNALS:  # one stop at a time (workers get SIGTERM once); Ctrl-C again aborts
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_IGN)
        log.warning("received %s: stopping the running jobs of %s (each saves its last.ckpt)",
                    signal_name(signum), sweep_dir)
        stopped: set[str] = set()
        while True:  # a job dispatched meanwhile is stopped too (before training: nothing to save)
            running = {d.name: pid for d in sweep_dir.iterdir()
                       if (pid := holder(d)) is not None and pid != os.getpid()}
            for name, pid in running.items():
                if name not in stopped and pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                    stopped.add(name)
            if not running:
                break
            time.sleep(0.2)
        saved = sorted(name for name in stopped if (sweep_dir / name / "checkpoints" / "last.ckpt").is_file())
        jobs = ", ".join(f"{name} ({'saved last.ckpt' if name in saved else 'stopped before training'})"
                         for name in sorted(stopped)) or "none (no job was running)"
        log.warning("sweep stopped by %s; stopped jobs: %s. Rerun the same command with hydra.sweep.dir=%s to "
                    "resume them (finished jobs are skipped)", signal_name(signum), jobs, sweep_dir)
        raise SweepStopped(signum)

    return handle


class SweepStopped(SystemExit):
    """The launcher stopped by a signal after its running jobs saved: exit status 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)


def check_launcher(config: DictConfig) -> None:
    """`launcher=slurm` needs `sbatch`: say so before anything is submitted."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise SweepError("launcher=slurm: SLURM is not available here (no `sbatch` on PATH). Run on a SLURM "
                         "login node (or add SLURM's bin dir to PATH), or run the same jobs locally with "
                         "launcher=submitit_local (one process per job) or launcher=joblib (parallel jobs).")


def _swept_keys(config: DictConfig) -> list[tuple[str, str]]:
    """(key, where it was set) for every override that a job will apply, hydra.* excluded."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    keys = []
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys += [(o.key_or_group, "on the command line") for o in parsed
             if o.type in (OverrideType.CHANGE, OverrideType.DEL)]
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    search = config.hydra.runtime.choices.get("hparams_search")
    where = f"in conf/hparams_search/{search}.yaml or hydra.sweeper.params" if search else "in hydra.sweeper.params"
    keys += [(str(k), where) for k in params if not str(k).startswith("+")]
    return [(k, w) for k, w in keys if not k.startswith("hydra") and "@" not in k]


def check_swept_keys(config: DictConfig) -> None:
    """Every swept key must exist in the composed config (or be a config group), else a clear error now."""
    choices = config.hydra.runtime.choices
    tree = OmegaConf.to_container(config, resolve=False)  # HydraConfig is not set yet: resolve nothing
    known = list(flatten({k: v for k, v in tree.items() if k != "hydra"}))
    for key, where in _swept_keys(config):
        if key in choices or key in known or any(k.startswith(f"{key}.") for k in known):
            continue
        close = difflib.get_close_matches(key, known, n=3)
        hint = f"Did you mean {', '.join(close)}? " if close else ""
        raise SweepError(f"sweep: `{key}` (set {where}) is not a key of the composed config. {hint}"
                         f"Fix the key, or write +{key}=… to add a new key.")


class SweepCallback(Callback):
    """Checks a multirun before it starts; at the end lists failed jobs and writes the report."""

    def __init__(self, report: bool = True) -> None:
        self.report = report
        self._set_stamp = False
        self._previous: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # jobs run in other processes (joblib, submitit) resolve the same `${run_stamp:}` sweep dir
        if not os.environ.get(RUN_STAMP_ENV):
            os.environ[RUN_STAMP_ENV] = run_stamp()
            self._set_stamp = True
        check_launcher(config)
        check_swept_keys(config)
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        in_main_thread = threading.current_thread() is threading.main_thread()
        if target.endswith(("JoblibLauncher", "BasicLauncher")) and in_main_thread:
            handler = _stop_sweep(Path(str(config.hydra.sweep.dir)))
            self._previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._end(config)
        finally:  # a stop signal while the report is written still says how to resume
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    def _end(self, config: DictConfig) -> None:
        from ..report import ReportError, write_report

        if self._set_stamp:
            os.environ.pop(RUN_STAMP_ENV, None)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = load_jobs(sweep_dir)
        if self.report:
            try:
                log.info("sweep report: %s", write_report(sweep_dir))
            except ReportError as err:
                log.warning("no sweep report: %s", err)
        failed = [job for job in jobs if job.status == "failed"]
        if (sweep_dir / MLFLOW_RUN_FILE).is_file():  # logger=mlflow: the sweep's parent run ends here
            from ..tracking.mlflow_logger import end_sweep_run

            end_sweep_run(sweep_dir, failed=bool(failed))
        done = sum(job.status == "finished" for job in jobs)
        log.info("sweep %s: %d of %d jobs finished", sweep_dir, done, len(jobs))
        if failed:
            swept = swept_keys(jobs)
            lines = "\n".join(f"  {job.dir.name} [{job.overrides_of(swept) or job.override_text}]: {job.error}"
                              for job in failed)
            raise SweepError(f"sweep {sweep_dir}: {len(failed)} of {len(jobs)} jobs failed (tracebacks in "
                             f"<job dir>/{ERROR_FILE}):\n{lines}\nFix the cause and rerun the same command "
                             f"with hydra.sweep.dir={sweep_dir}: finished jobs are skipped.")
