"""The report's figures as PNG files: learning curves, and a metric against one swept hyperparameter.

matplotlib is imported only when a figure is drawn (its object API: no pyplot state, no display needed).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

Points = list[tuple[int, float]]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_curves(panels: list[tuple[str, list[tuple[str, Points]]]], path: Path) -> Path | None:
    """One subplot per (title, lines); each line is (label, points). None if there is nothing to draw."""
    from matplotlib.figure import Figure

    panels = [(title, [(label, pts) for label, pts in lines if pts]) for title, lines in panels]
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        return None
    fig = Figure(figsize=(6 * len(panels), 4))
    for i, (title, lines) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        colours: dict[str, str] = {}  # a metric and its raw-weights twin share a colour; raw is dashed
        for label, pts in lines:
            colour = colours.setdefault(label.replace("_raw/", "/"), f"C{len(colours) % 10}")
            ax.plot(*zip(*pts), marker="o" if len(pts) < 20 else None, markersize=3, label=label, color=colour,
                    linestyle="--" if "_raw/" in label else "-")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(lines) <= 12:
            ax.legend(fontsize=7)
    return _save(fig, path)


def _as_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def plot_metric_vs(points: list[tuple[str, float]], xlabel: str, ylabel: str, path: Path) -> Path | None:
    """(hyperparameter value as written in the override, metric) of each job, the mean per value as a line;
    a numeric axis (log-scaled over a decade or more) when every value is a number. None without points."""
    from matplotlib.figure import Figure

    if not points:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    numeric = [_as_float(x) for x, _ in points]
    if all(x is not None for x in numeric):
        xs: list[Any] = numeric
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
    else:
        labels = sorted({x for x, _ in points})
        xs = [labels.index(x) for x, _ in points]
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ys = [y for _, y in points]
    ax.scatter(xs, ys, alpha=0.7)
    by_x: dict[Any, list[float]] = defaultdict(list)
    for x, y in zip(xs, ys):
        by_x[x].append(y)
    ux = sorted(by_x)
    ax.plot(ux, [statistics.fmean(by_x[x]) for x in ux], color="gray", linewidth=1, label="mean")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
