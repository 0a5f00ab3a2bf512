"""`python -m emotionsumm.report <run or sweep dir>`: report.md, report.csv and PNG plots in that dir.

A sweep dir (Hydra multirun) gets one row per job (its swept overrides and final metrics), mean ± std
over seeds / folds grouped by the other swept overrides, the monitored metric against each swept
hyperparameter and learning curves per job; when the jobs are GLUE tasks (`data=glue_<task>`), a GLUE
table: each task's official metrics and the GLUE average. A run dir gets its metrics, learning curves, and the
confusion matrices (classification) or a ROUGE table (summarization). Curves come from the
TensorBoard event files in `<run>/tb`. Loading runs is `runs/layout.py`'s job, drawing figures `tracking/plots.py`'s.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from .policies import confusion_file
from .runs.layout import (
    CONFIG_FILE,
    ERROR_FILE,
    METRICS_FILE,
    MULTIRUN_FILE,
    OPTUNA_RESULTS_FILE,
    TB_DIR,
    Job,
    is_run_dir,
    load_job,
    load_jobs,
    read_scalars,
    read_yaml,
    swept_keys,
)
from .tracking.plots import plot_curves, plot_metric_vs

# overrides that replicate a configuration rather than change it: averaged over in the group table
REPLICATE_KEYS = ("seed", "data.fold")
# what the "validation" panel of a run's learning curves shows (others, e.g. gen_len, get a panel of their own)
QUALITY_METRICS = ("acc", "macro_f1", "weighted_f1", "uar", "rouge1", "rouge2", "rougeL", "rougeLsum")
# GLUE tasks in the benchmark's order, with their official names (MNLI's validation split is MNLI-matched)
GLUE_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI-m",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
GLUE_METRICS = ("mcc", "f1", "acc", "pearson", "spearman")
USAGE = "pass a run dir (outputs/<experiment>/<run>) or a sweep dir (outputs/multirun/<sweep>)"


class ReportError(Exception):
    """A path that cannot be reported on; the message says what to pass instead."""


def headline(key: str) -> bool:
    """Metrics worth a table column: not per-class, not the raw-weights twin, not counters."""
    return key not in ("step", "epoch") and "_raw/" not in key and not key.split("/")[-1].startswith("f1_")


def _fmt(value: Any) -> str:
    """Floats with 4 decimals (4 significant digits when tiny or huge); NaN and None as blanks."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[_fmt(v).replace("|", "\\|") for v in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in cells)]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows])


def group_stats(jobs: list[Job], group_keys: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """Mean, sample std and count of each metric over the finished jobs sharing `group_keys` values."""
    groups: dict[tuple[str, ...], list[Job]] = defaultdict(list)
    for job in jobs:
        if job.metrics is not None:
            groups[tuple(job.overrides.get(k, "") for k in group_keys)].append(job)
    out = []
    for values, members in groups.items():
        row: dict[str, Any] = dict(zip(group_keys, values))
        row["n"] = len(members)
        for key in metrics:
            xs = [job.metrics[key] for job in members if key in job.metrics]
            row[key] = (statistics.fmean(xs) if xs else math.nan, statistics.stdev(xs) if len(xs) > 1 else math.nan)
        out.append(row)
    return out


def _mean_std(pair: tuple[float, float]) -> str:
    mean, std = pair
    return _fmt(mean) if math.isnan(std) else f"{_fmt(mean)} ± {_fmt(std)}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_sweep_report(sweep_dir: Path, jobs: list[Job]) -> Path:
    """report.md/.csv, the group table over replicates and the plots of a sweep's jobs, ranked by their score."""
    finished = [job for job in jobs if job.metrics is not None]
    if not finished:
        failed = [f"{job.dir.name}: {job.error}" for job in jobs if job.error]
        raise ReportError(f"{sweep_dir}: no finished job among {len(jobs)} job dirs (none has {METRICS_FILE})"
                          + (f"; failed: {'; '.join(failed)}" if failed else "")
                          + f". Let the sweep finish, or rerun its command with hydra.sweep.dir={sweep_dir} "
                            "to resume it.")
    ref = finished[0]
    ranked_by = ref.score_key
    swept = swept_keys(jobs)
    all_metrics = sorted({k for job in finished for k in job.metrics})
    shown = [ranked_by, *[k for k in all_metrics if headline(k) and k != ranked_by]]
    rows = [[job.dir.name, job.status, *[job.overrides.get(k, "") for k in swept],
             *[job.metrics.get(k, math.nan) if job.metrics else math.nan for k in all_metrics],
             job.override_text, job.error or ""] for job in jobs]
    _write_csv(sweep_dir / "report.csv", ["job", "status", *swept, *all_metrics, "overrides", "error"], rows)

    scored = [job for job in finished if job.score is not None]
    best = (max if ref.mode == "max" else min)(scored, key=lambda job: job.score) if scored else None
    counts = {s: sum(job.status == s for job in jobs) for s in ("finished", "failed", "unfinished")}
    md = [f"# Sweep report: {sweep_dir.name}", "", f"`{sweep_dir}`: {len(jobs)} jobs, "
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f". Monitored: `{ranked_by}` ({ref.mode})"
          + (" — the jobs have no validation split" if ranked_by.startswith("test/") else "") + ".", ""]
    glue = glue_jobs(jobs)
    if best is not None and len({task for _, task, _ in glue}) < 2:  # scores of different tasks don't compare
        md += [f"Best job: `{best.dir.name}` with {ranked_by} = {_fmt(best.score)} "
               f"(`{best.overrides_of(swept) or best.override_text}`).", ""]
    optuna = read_yaml(sweep_dir / OPTUNA_RESULTS_FILE)
    if optuna and "best_params" in optuna:
        params = " ".join(f"{k}={v}" for k, v in optuna["best_params"].items())
        md += [f"Optuna best value {_fmt(optuna['best_value'])} with `{params}` ({OPTUNA_RESULTS_FILE}).", ""]
    if glue:
        md += write_glue_table(sweep_dir, glue, [k for k in swept if k != "data" and k not in REPLICATE_KEYS])
    columns = swept or ["overrides"]
    md += ["## Jobs", "", *_md_table(
        ["job", "status", *columns, *shown],
        [[job.dir.name, job.status, *([job.overrides.get(k, "") for k in swept] if swept else [job.override_text]),
          *[job.metrics.get(k, math.nan) if job.metrics else math.nan for k in shown]] for job in jobs]), ""]
    replicates = [k for k in swept if k in REPLICATE_KEYS]
    if replicates:
        group_keys = [k for k in swept if k not in REPLICATE_KEYS]
        stats = group_stats(jobs, group_keys, shown)
        md += [f"## Mean ± std over {', '.join(replicates)}", "", *_md_table(
            [*group_keys, "n", *shown],
            [[*[row[k] for k in group_keys], row["n"], *[_mean_std(row[k]) for k in shown]] for row in stats]), ""]
        _write_csv(sweep_dir / "report_groups.csv",
                   [*group_keys, "n", *[f"{k}{s}" for k in shown for s in (" mean", " std")]],
                   [[*[row[k] for k in group_keys], row["n"], *[v for k in shown for v in row[k]]] for row in stats])
    failed = [job for job in jobs if job.status == "failed"]
    if failed:
        md += ["## Failed jobs", "", *[f"- `{job.dir.name}` (`{job.override_text}`): {job.error} — see "
                                      f"`{job.dir.name}/{ERROR_FILE}`" for job in failed], ""]
    plots = [plot_metric_vs([(job.overrides.get(key, ""), job.metrics[ranked_by]) for job in jobs
                             if ranked_by in (job.metrics or {})], key, ranked_by,
                            sweep_dir / f"metric_vs_{_safe(key)}.png") for key in swept]
    scalars = {f"{job.dir.name} {job.overrides_of(swept)}".strip(): read_scalars(job.dir) for job in jobs}
    tags = ["train/loss", ref.monitor]
    curves = plot_curves([(tag, [(name, s.get(tag, [])) for name, s in scalars.items()]) for tag in tags],
                         sweep_dir / "learning_curves.png")
    md += ["## Plots", "", *[f"![{p.stem}]({p.name})" for p in [*plots, curves] if p is not None], ""]
    path = sweep_dir / "report.md"
    path.write_text("\n".join(md))
    return path


GlueJob = tuple[Job, str, list[str]]  # a finished job, its data.glue_task and data.score_metrics (official metrics)


def glue_jobs(jobs: list[Job]) -> list[GlueJob]:
    """The finished jobs that ran a GLUE task, with the task and its official metrics."""
    out = []
    for job in jobs:
        data = ((read_yaml(job.dir / CONFIG_FILE) or {}).get("data") or {}) if job.metrics is not None else {}
        if data.get("glue_task"):
            out.append((job, str(data["glue_task"]), [str(m) for m in data.get("score_metrics") or ["acc"]]))
    return out


def _glue_rows(jobs: list[GlueJob]) -> list[list[Any]]:
    """Rows task, official metrics (mean over replicate jobs), task score; MNLI-mm (test split, not averaged);
    the GLUE average: the mean over tasks of each task's score (the mean of its official metrics)."""
    by_task: dict[str, list[Job]] = defaultdict(list)
    metrics_of: dict[str, list[str]] = {}
    for job, task, metrics in jobs:
        by_task[task].append(job)
        metrics_of[task] = metrics
    order = sorted(by_task, key=lambda t: (list(GLUE_NAMES).index(t) if t in GLUE_NAMES else len(GLUE_NAMES), t))

    def mean(members: list[Job], key: str) -> float:
        values = [job.metrics[key] for job in members if key in job.metrics]
        return statistics.fmean(values) if values else math.nan

    rows, scores = [], []
    columns = [*GLUE_METRICS, *sorted({m for ms in metrics_of.values() for m in ms} - set(GLUE_METRICS))]
    for task in order:
        values = {m: mean(by_task[task], f"val/{m}") for m in metrics_of[task]}
        score = statistics.fmean(values.values())
        scores.append(score)
        rows.append([GLUE_NAMES.get(task, task), *[values.get(m, math.nan) for m in columns], score,
                     len(by_task[task])])
        if task == "mnli" and any("test/acc" in job.metrics for job in by_task[task]):
            rows.append(["MNLI-mm (test split, not averaged)", *[mean(by_task[task], "test/acc") if m == "acc"
                                                                  else math.nan for m in columns], math.nan,
                         len(by_task[task])])
    complete = "" if set(GLUE_NAMES) <= set(by_task) else f" ({len(by_task)} of {len(GLUE_NAMES)} tasks)"
    rows.append([f"GLUE average{complete}", *[math.nan] * len(columns), statistics.fmean(scores), len(jobs)])
    return [["task", *columns, "score", "jobs"], *rows]


def write_glue_table(sweep_dir: Path, jobs: list[GlueJob], group_keys: list[str]) -> list[str]:
    """The GLUE section of a sweep report (one table per value of the other swept overrides, e.g. the model)
    and `report_glue.csv`."""
    groups: dict[tuple[str, ...], list[GlueJob]] = defaultdict(list)
    for entry in jobs:
        groups[tuple(entry[0].overrides.get(k, "") for k in group_keys)].append(entry)
    md = ["## GLUE", "", "Each task's official metrics on its validation split (the final `val/…` metrics; the "
          "mean over replicate jobs), its score (the mean of its official metrics) and the GLUE average (the mean "
          "of the task scores).", ""]
    csv_rows = []
    for values, members in groups.items():
        header, *rows = _glue_rows(members)
        if group_keys:
            md += [f"### {' '.join(f'{k}={v}' for k, v in zip(group_keys, values))}", ""]
        md += [*_md_table(header, rows), ""]
        csv_rows += [[*values, *row] for row in rows]
    _write_csv(sweep_dir / "report_glue.csv", [*group_keys, *header], csv_rows)
    return md


def _pivot(metrics: dict[str, float], keys: list[str]) -> tuple[list[str], list[list[Any]]]:
    """`split/name` keys as a table: one row per split prefix, one column per metric name."""
    order = ["val", "val_raw", "test", "test_raw"]
    prefixes = sorted(dict.fromkeys(k.rsplit("/", 1)[0] for k in keys),
                      key=lambda p: order.index(p) if p in order else len(order))
    names = sorted({k.rsplit("/", 1)[1] for k in keys}, key=lambda n: (not headline(n), n))
    return ["", *names], [[p, *[metrics.get(f"{p}/{n}", math.nan) for n in names]] for p in prefixes]


def write_run_report(run_dir: Path) -> Path:
    """report.md/.csv and the learning curves of one run: metrics per split, ROUGE, confusion matrices."""
    job = load_job(run_dir)
    scalars = read_scalars(run_dir)
    if job.metrics is None and not scalars:
        raise ReportError(f"{run_dir}: the run has neither {METRICS_FILE} nor TensorBoard scalars in {TB_DIR}/; "
                          f"finish it (python -m emotionsumm.train hydra.run.dir={run_dir} trainer.resume=auto) "
                          "or pass another dir.")
    metrics = job.metrics or {}
    _write_csv(run_dir / "report.csv", ["metric", "value"], [[k, v] for k, v in sorted(metrics.items())])
    md = [f"# Run report: {run_dir.name}", "", f"`{run_dir}` ({job.status}); overrides: `{job.override_text or '-'}`",
          ""]
    if job.error:
        md += [f"Failed: {job.error} (see {ERROR_FILE})", ""]
    if metrics:
        md += [f"{job.score_key} = {_fmt(job.score)} ({job.mode}); step {int(metrics.get('step', 0))}, "
               f"epoch {int(metrics.get('epoch', 0))}", ""]
    rouge = [k for k in metrics if "/" in k and k.rsplit("/", 1)[1].startswith("rouge")]
    plain = [k for k in metrics if "/" in k and k not in rouge]
    for title, keys in (("Metrics", plain), ("ROUGE", rouge)):
        if keys:
            md += [f"## {title}", "", *_md_table(*_pivot(metrics, keys)), ""]
    val = [t for t in scalars if t.startswith(("val/", "val_raw/")) and headline(t.replace("_raw/", "/"))
           and not t.endswith("/loss")]
    quality = [t for t in val if t.rsplit("/", 1)[1] in QUALITY_METRICS]
    curves = plot_curves([("loss", [(t, scalars[t]) for t in scalars if t.endswith("/loss") and "test" not in t]),
                          ("validation", [(t, scalars[t]) for t in quality]),
                          ("other validation values", [(t, scalars[t]) for t in val if t not in quality]),
                          ("learning rate", [(t, scalars[t]) for t in scalars if t.startswith("lr/")])],
                         run_dir / "learning_curves.png")
    figures = [p.name for p in [curves] if p is not None]
    is_classification = any(k.rsplit("/", 1)[-1] == "acc" for k in metrics)
    confusion = [confusion_file(s) for s in ("val", "test") if (run_dir / confusion_file(s)).is_file()]
    if is_classification and not confusion:
        md += [f"No confusion matrix: {confusion_file('val')} / {confusion_file('test')} are missing from the "
               "run dir.", ""]
    md += ["## Plots", "", *[f"![{Path(n).stem}]({n})" for n in [*figures, *confusion]], ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(md))
    return path


def write_report(path: str | Path) -> Path:
    """Report on a run dir or a sweep dir; returns the path of report.md."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory; {USAGE}.")
    if is_run_dir(path):
        return write_run_report(path)
    jobs = load_jobs(path)
    if jobs or (path / MULTIRUN_FILE).is_file():
        return write_sweep_report(path, jobs)
    raise ReportError(f"{path} is neither a run dir (no {CONFIG_FILE} or {METRICS_FILE}) nor a sweep dir "
                      f"(no {MULTIRUN_FILE} or job dirs with .hydra/); {USAGE}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emotionsumm.report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="a run dir or a sweep (multirun) dir")
    args = parser.parse_args(argv)
    try:
        print(write_report(args.dir))
    except ReportError as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
