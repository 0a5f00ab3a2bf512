"""MLflow tracking of a training run (`logger=mlflow`): any tracking URI, by default one SQLite file.

A run gets the flattened resolved config as params, the trainer's scalars under their TensorBoard names
as metrics, the final metrics, and at the end the run dir's small files as artifacts. Its ids are kept
in `<run dir>/mlflow_run.json`, so a resumed run (`trainer.resume=…`) continues the same MLflow run; it
ends FINISHED, FAILED (an exception) or KILLED (stopped by a signal). A multirun is one experiment
with a parent run (ids in `<sweep dir>/mlflow_run.json`) and one child run per job; parallel jobs set
up their runs one at a time (a file lock), and SQLite waits for its writers. MLflow is imported only
when this logger is built.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config.core import flatten
from ..runs.atomic import TMP_PREFIX, write_json
from ..runs.layout import CHECKPOINT_DIR, METRICS_FILE, MLFLOW_RUN_FILE, PROVENANCE_FILE, TB_DIR
from ..training.stop import Interrupted
from .loggers import NullLogger

log = logging.getLogger(__name__)

MISSING = "logger=mlflow needs MLflow, an optional extra: pip install -e '.[mlflow]'"
SKIPPED_DIRS = {CHECKPOINT_DIR, TB_DIR, "mlartifacts", "mlruns"}  # weights, event files, a local artifact store
SKIPPED_SUFFIXES = (".ckpt", ".pt", ".db", ".db-journal", ".db-wal", ".db-shm", ".lock")
SWEEP_LOCK = ".mlflow.lock"


def import_mlflow() -> Any:
    """The mlflow module, or an ImportError that says how to install it.

    MLflow's anonymous usage telemetry is off unless the user sets MLFLOW_DISABLE_TELEMETRY themselves:
    a training run should not phone home (and many clusters have no internet)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError as err:
        raise ImportError(MISSING) from err
    return mlflow


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///<file>` URI (None for other stores and in-memory SQLite)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    path = tracking_uri[len(prefix):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """An OS lock (flock) between processes, e.g. parallel sweep jobs setting up runs in one database."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _store_lock(tracking_uri: str) -> contextlib.AbstractContextManager:
    """Serialises set-up against one SQLite file: MLflow creates a new database's tables without a lock."""
    db = sqlite_file(tracking_uri)
    return exclusive(db.with_name(db.name + ".lock")) if db is not None else contextlib.nullcontext()


def read_record(directory: Path) -> dict[str, str] | None:
    """The MLflow ids kept in `<directory>/mlflow_run.json` (None if there is none or it is unreadable)."""
    try:
        record = json.loads((directory / MLFLOW_RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"run_id", "tracking_uri"} <= set(record) else None


def _existing_run(client: Any, record: dict[str, str] | None, tracking_uri: str) -> Any | None:
    """The live MLflow run a record names in this tracking store, else None."""
    from mlflow.exceptions import MlflowException

    if record is None or record["tracking_uri"] != tracking_uri:
        return None
    try:
        run = client.get_run(record["run_id"])
    except MlflowException:
        return None
    return run if run.info.lifecycle_stage == "active" else None


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    """The id of experiment `name`, created (artifacts beside a SQLite file) if it does not exist."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        db = sqlite_file(tracking_uri)
        location = (db.parent / "mlartifacts").resolve().as_uri() if db is not None else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by a parallel job (stores without our file lock)
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        raise ValueError(f"MLflow experiment '{name}' in {tracking_uri} is deleted: restore it "
                         f"(mlflow experiments restore --experiment-id {found.experiment_id}) or choose another "
                         "name with logger.mlflow.experiment_name=…")
    return found.experiment_id


def _sweep_parent(client: Any, tracking_uri: str, sweep_dir: Path, experiment_name: str) -> tuple[str, str]:
    """(experiment id, parent run id) of the multirun in `sweep_dir`: made by its first job, found by the others
    and by a rerun of the sweep (which sets it RUNNING again)."""
    with exclusive(sweep_dir / SWEEP_LOCK):
        record = read_record(sweep_dir)
        run = _existing_run(client, record, tracking_uri)
        if run is not None:
            if run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
            return run.info.experiment_id, run.info.run_id
        experiment = _experiment_id(client, f"{experiment_name}/{sweep_dir.name}", tracking_uri)
        parent = client.create_run(experiment, run_name=sweep_dir.name,
                                   tags={"emotionsumm.sweep_dir": str(sweep_dir.resolve()), "mlflow.user": _user()})
        write_json({"run_id": parent.info.run_id, "experiment_id": experiment, "tracking_uri": tracking_uri},
                   sweep_dir / MLFLOW_RUN_FILE)
        return experiment, parent.info.run_id


def end_sweep_run(sweep_dir: Path, failed: bool) -> None:
    """At the end of a multirun: the sweep dir's small files (report, multirun.yaml) go to the parent run,
    which ends FINISHED, or FAILED if a job failed."""
    record = read_record(sweep_dir)
    if record is None:
        return
    import_mlflow()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(record["tracking_uri"])
    for path in artifact_files(sweep_dir, 10 * 2**20, recursive=False):
        client.log_artifact(record["run_id"], str(path))
    client.set_terminated(record["run_id"], "FAILED" if failed else "FINISHED")


def artifact_files(root: Path, max_bytes: float, recursive: bool = True) -> list[Path]:
    """The small files of a run (or sweep) dir worth keeping: config, metrics, plots, reports, logs; never
    checkpoints, event files, databases, locks, temp files or the MLflow ids."""
    found = []
    for path in sorted(root.iterdir()):
        if path.is_dir():
            if recursive and path.name not in SKIPPED_DIRS:
                found += artifact_files(path, max_bytes)
        elif (path.name != MLFLOW_RUN_FILE and not path.name.startswith(TMP_PREFIX)
              and not path.name.endswith(SKIPPED_SUFFIXES) and path.stat().st_size <= max_bytes):
            found.append(path)
    return found


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MLflowLogger(NullLogger):
    """One MLflow run per run dir (a child of the sweep's parent run in a multirun); see the module docstring.

    Metrics are buffered and sent at every `flush` (the trainer flushes at each checkpoint) and at least every
    `flush_every_s` seconds. MLflow cannot delete values, so instead of TensorBoard's purge a resumed run skips
    each metric's steps that the run holds already: no step is logged twice.
    """

    logs_scalars = True  # no histograms: MLflow has none (NullLogger's no-op)

    def __init__(self, run_dir: str | Path, tracking_uri: str, experiment_name: str = "emotionsumm",
                 run_name: str | None = None, tags: dict[str, Any] | None = None, max_artifact_mb: float = 10,
                 flush_every_s: float = 30, purge_step: int | None = None, run_config: dict[str, Any] | None = None,
                 sweep_dir: str | Path | None = None) -> None:
        import_mlflow()
        from mlflow.tracking import MlflowClient

        self.run_dir, self.tracking_uri = Path(run_dir), str(tracking_uri)
        self.max_artifact_bytes, self.flush_every_s = max_artifact_mb * 2**20, flush_every_s
        self.last_step: dict[str, int] = {}  # metric -> the last step sent or buffered (held by MLflow on resume)
        self._buffer: list[Any] = []
        self._sent_at = time.monotonic()
        self._final: dict[str, float] | None = None
        self._closed = False
        with _store_lock(self.tracking_uri):
            self.client = MlflowClient(self.tracking_uri)
            resumed = purge_step is not None
            run = _existing_run(self.client, read_record(self.run_dir), self.tracking_uri) if resumed else None
            if run is None:
                run = self._start(experiment_name, run_name, tags or {}, sweep_dir)
            else:
                self._continue(run)
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        write_json({"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.tracking_uri},
                   self.run_dir / MLFLOW_RUN_FILE)
        self._log_params(run_config or {}, run.data.params)
        atexit.register(self._close_at_exit)
        log.info("MLflow run %s (experiment %s) in %s", self.run_id, self.experiment_id, self.tracking_uri)

    def _start(self, experiment_name: str, run_name: str | None, tags: dict[str, Any],
               sweep_dir: str | Path | None) -> Any:
        run_tags = {"mlflow.user": _user(), "mlflow.source.name": "emotionsumm.train",
                    "emotionsumm.run_dir": str(self.run_dir.resolve())}
        if sweep_dir is not None:
            experiment, parent = _sweep_parent(self.client, self.tracking_uri, Path(sweep_dir), experiment_name)
            run_tags["mlflow.parentRunId"] = parent
        else:
            experiment = _experiment_id(self.client, experiment_name, self.tracking_uri)
        with contextlib.suppress(OSError, ValueError):
            provenance = json.loads((self.run_dir / PROVENANCE_FILE).read_text())
            run_tags["mlflow.source.git.commit"] = provenance.get("git_commit") or ""
            run_tags["emotionsumm.git_dirty"] = str(provenance.get("git_dirty"))
            run_tags["emotionsumm.command"] = " ".join(provenance.get("command") or [])[:5000]
        run_tags.update({str(k): str(v) for k, v in tags.items()})
        return self.client.create_run(experiment, run_name=run_name or self.run_dir.name, tags=run_tags)

    def _continue(self, run: Any) -> None:
        """A resumed run: RUNNING again; the steps each metric holds are not logged twice."""
        self.client.update_run(run.info.run_id, status="RUNNING")
        for key in run.data.metrics:
            self.last_step[key] = max(m.step for m in self.client.get_metric_history(run.info.run_id, key))
        log.info("resuming MLflow run %s", run.info.run_id)

    def _log_params(self, config: dict[str, Any], existing: dict[str, str]) -> None:
        """The flattened resolved config (hydra.* aside), cut to MLflow's limits of value length and batch size.

        Params cannot change: a resumed run keeps the first values (e.g. `trainer.resume` stays null).
        """
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = [Param(key, _param_text(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in flatten(config).items()
                  if not key.startswith("hydra.") and key not in existing and len(key) <= MAX_ENTITY_KEY_LENGTH]
        for batch in _batches(params, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=batch)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in scalars.items():
            if step <= self.last_step.get(key, -1):
                continue
            self.last_step[key] = step
            self._buffer.append(Metric(key, float(value), now, step))
        if time.monotonic() - self._sent_at >= self.flush_every_s:
            self.flush()

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.run_id, figure, f"figures/{tag}/step_{step:07d}.png")
        plt.close(figure)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.client.log_text(self.run_id, text, f"text/{tag}/step_{step:07d}.md")

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The final metrics: those no step logged (`best/…`, `step`, `epoch`) at the last step, and metrics.json."""
        self._final = metrics
        self.log_scalars(metrics, int(metrics.get("step", max(self.last_step.values(), default=0))))
        self.client.log_text(self.run_id, json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n",
                             METRICS_FILE)

    def flush(self) -> None:
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        for batch in _batches(self._buffer, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch)
        self._buffer.clear()
        self._sent_at = time.monotonic()

    def _status(self) -> str:
        """FAILED while an exception propagates (KILLED for a signal or Ctrl-C); without one, a run closed
        before its final metrics was stopped by a signal (the trainer saved and closes before exiting)."""
        error = sys.exc_info()[1]
        if error is not None:
            return "KILLED" if isinstance(error, (Interrupted, KeyboardInterrupt)) else "FAILED"
        return "FINISHED" if self._final is not None else "KILLED"

    def close(self, status: str | None = None) -> None:
        """Send the buffer, upload the run dir's small files, end the run (once)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        status = status or self._status()
        try:
            self.flush()
            for path in artifact_files(self.run_dir, self.max_artifact_bytes):
                folder = path.parent.relative_to(self.run_dir).as_posix()
                self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        finally:
            self.client.set_terminated(self.run_id, status)

    def _close_at_exit(self) -> None:
        """A process that ends without closing the run (an error outside the training loop) marks it FAILED."""
        self.close("FAILED")
