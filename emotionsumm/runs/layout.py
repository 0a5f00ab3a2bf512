"""What a run dir holds and how to read it back: file names, job dir names, the job record, the objective.

The sweep (which skips finished jobs and records failed ones), the report (which tables and plots them)
and the config's `${job_subdir:…}` resolver all go through here, so they agree on every name and on what
a run is judged by. Light on purpose: no torch, no Hydra, nothing else of the package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# ---- the files of a run dir (`outputs/<experiment>/<stamp>` or a sweep's `<num>-<hash>` job dir) -----------
METRICS_FILE = "metrics.json"  # the final metrics: written last, so its presence means "finished"
ERROR_FILE = "error.txt"  # a failed sweep job's overrides and traceback
CONFIG_FILE = ".hydra/config.yaml"  # the composed config
OVERRIDES_FILE = ".hydra/overrides.yaml"  # the job's command-line overrides
TRAIN_LOG = "train.log"  # Hydra's `<job name>.log` of a training run
TB_DIR = "tb"  # TensorBoard event files
CSV_FILE = "metrics.csv"  # `logger=csv`: step,name,value rows
MLFLOW_RUN_FILE = "mlflow_run.json"  # `logger=mlflow`: the run's (a sweep dir's: the parent run's) MLflow ids
CHECKPOINT_DIR = "checkpoints"  # top-k and last checkpoints (file names in checkpoint.py)
PROVENANCE_FILE = "provenance.json"  # command line, git commit, package versions
# ---- ... and of a sweep dir (`outputs/multirun/<stamp>`) ----------------------------------------------------
MULTIRUN_FILE = "multirun.yaml"
OPTUNA_RESULTS_FILE = "optimization_results.yaml"  # the Optuna sweeper's best params and value


# ---- job dir names -------------------------------------------------------------------------------------------
def override_hash(overrides: Sequence[str]) -> str:
    """8 hex digits identifying a job by its overrides (order-insensitive)."""
    return hashlib.sha1("\n".join(sorted(str(o) for o in overrides)).encode()).hexdigest()[:8]


def job_subdir(sweep_dir: str, num: int, overrides: Sequence[str]) -> str:
    """`${job_subdir:…}` resolver: the existing `<n>-<hash>` dir of these overrides, else `<num>-<hash>`."""
    digest = override_hash(overrides)
    root = Path(str(sweep_dir))
    if root.is_dir():
        old = sorted((p.name for p in root.iterdir() if re.fullmatch(rf"\d+-{digest}", p.name)),
                     key=lambda name: int(name.split("-")[0]))
        if old:
            return old[0]
    return f"{num}-{digest}"


# ---- the objective -------------------------------------------------------------------------------------------
def objective_key(monitor: str, metrics: Mapping[str, Any]) -> str | None:
    """The metric a run is judged by: `best/<monitor>` (the best validation value, whose weights were kept),
    else the last `<monitor>`; None if the run has neither (it had no validation split).

    What `python -m emotionsumm.train` returns to the Optuna sweeper and what a report ranks jobs by.
    """
    return next((key for key in (f"best/{monitor}", monitor) if key in metrics), None)


def objective_value(monitor: str, metrics: Mapping[str, Any]) -> float | None:
    """The value of `objective_key`; None (a failed trial for the Optuna sweeper) if there is none."""
    key = objective_key(monitor, metrics)
    return None if key is None or metrics[key] is None else float(metrics[key])


def score_key(monitor: str, metrics: Mapping[str, Any]) -> str:
    """What a report shows a run by: its objective; for a run without one (no validation: e.g. EmoDB, trained
    on every non-test speaker) the test value of the monitored metric, which the report labels as such.
    Never what a sweep optimises: that would choose hyperparameters on the test set."""
    test_key = f"test/{monitor.split('/', 1)[-1]}"
    return objective_key(monitor, metrics) or (test_key if test_key in metrics else f"best/{monitor}")


# ---- the job record ------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One run dir: its overrides, final metrics (None if unfinished) and failure, if any."""

    dir: Path
    overrides: dict[str, str]
    metrics: dict[str, float] | None
    monitor: str
    mode: str
    error: str | None

    @property
    def status(self) -> str:
        return "finished" if self.metrics is not None else "failed" if self.error else "unfinished"

    @property
    def number(self) -> int:
        match = re.match(r"\d+", self.dir.name)
        return int(match.group()) if match else -1

    @property
    def override_text(self) -> str:
        return self.overrides_of(list(self.overrides))

    def overrides_of(self, keys: list[str]) -> str:
        return " ".join(f"{k}={self.overrides[k]}" for k in keys if k in self.overrides)

    @property
    def score_key(self) -> str:
        return score_key(self.monitor, self.metrics or {})

    @property
    def score(self) -> float | None:
        return None if self.metrics is None else self.metrics.get(self.score_key)


def read_yaml(path: Path) -> Any:
    """The parsed file, None if it does not exist."""
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def load_job(run_dir: Path) -> Job:
    overrides = {}
    for item in read_yaml(run_dir / OVERRIDES_FILE) or []:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    config = read_yaml(run_dir / CONFIG_FILE) or {}
    metrics_file = run_dir / METRICS_FILE
    metrics = None
    if metrics_file.is_file():
        metrics = {k: float(v) for k, v in json.loads(metrics_file.read_text()).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
    error_file = run_dir / ERROR_FILE
    error = None
    if error_file.is_file():
        lines = [line for line in error_file.read_text().splitlines() if line.strip()]
        error = lines[-1] if lines else "failed"
    return Job(run_dir, overrides, metrics, str(setting(config, "trainer.monitor", "val/loss")),
               str(setting(config, "trainer.mode", "min")), error)


def setting(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """`key` of a run's stored config, its interpolation resolved (trainer.monitor follows data.monitor)."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(OmegaConf.create(dict(config)), key, default=default)
    except Exception:  # noqa: BLE001 - e.g. `${hydra:…}` outside Hydra: the raw value is what we have
        node: Any = config
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return node if node != {} else default


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / METRICS_FILE).is_file()


def load_jobs(sweep_dir: Path) -> list[Job]:
    """The job dirs of a sweep (subdirs with .hydra/overrides.yaml), in job-number order."""
    if not sweep_dir.is_dir():
        return []
    dirs = [p for p in sweep_dir.iterdir() if (p / OVERRIDES_FILE).is_file()]
    return sorted((load_job(p) for p in dirs), key=lambda job: (job.number, job.dir.name))


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between jobs, in first-seen order."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the run's TensorBoard event files (empty if there are none)."""
    if not (run_dir / TB_DIR).is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # one "No path found after" line per file
    acc = EventAccumulator(str(run_dir / TB_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            if not tag.startswith("hparams/")}
