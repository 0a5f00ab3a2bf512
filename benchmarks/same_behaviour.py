"""Do two trainings end bit-identical? For a refactor that must not change behaviour (issue 27).

    python benchmarks/same_behaviour.py <dir A> <dir B> [--read-as <A checkout>=<B checkout>]

Each dir is a run dir (it holds `metrics.json`) or a folder of run dirs (compared by name, e.g. one per
experiment). For every run it compares every checkpoint of `checkpoints/` (same names): the policy's weights,
the EMA, the optimizer and scheduler state, the run state, the RNG streams, with `torch.equal` on every tensor
and `==` on everything else; the stored config after today's module names (`config.renames`: a run of the code
before the packages by role names `emotionsumm.trainer.Trainer`), with A's run dir read as B's (and each
`--read-as` path of A as B's: two checkouts name their own `paths.root_dir`); and `metrics.json` the same way.
Prints one line per run and, last, a JSON object; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from emotionsumm.config.renames import current_targets


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Key paths where `a` and `b` differ: tensors by `torch.equal` (dtype and shape too), the rest by `==`."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{where}.{k}: only in {'A' if k in a else 'B'}" for k in sorted(set(a) ^ set(b), key=str)]
        for key in sorted(set(a) & set(b), key=str):
            found += differences(a[key], b[key], f"{where}.{key}")
        return found
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"[:300]]


def _rebased(node: Any, paths: dict[str, str]) -> Any:
    """`node` with each path of run A (`paths` keys) read as run B's in every string value."""
    if isinstance(node, dict):
        return {k: _rebased(v, paths) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebased(v, paths) for v in node]
    if isinstance(node, str):
        for old, new in paths.items():
            node = node.replace(old, new)
    return node


def tensor_count(node: Any) -> int:
    if isinstance(node, torch.Tensor):
        return 1
    if isinstance(node, dict):
        return sum(map(tensor_count, node.values()))
    if isinstance(node, (list, tuple)):
        return sum(map(tensor_count, node))
    return 0


def compare_run(a: Path, b: Path, read_as: dict[str, str]) -> dict[str, Any]:
    """The differences between run dirs `a` and `b` (A's paths `read_as` B's), and how much was compared."""
    paths = {str(a): str(b), **read_as}
    found: list[str] = []
    names_a = sorted(p.name for p in (a / "checkpoints").glob("*.ckpt"))
    names_b = sorted(p.name for p in (b / "checkpoints").glob("*.ckpt"))
    if names_a != names_b:
        found.append(f"checkpoints: {names_a} != {names_b}")
    tensors = 0
    for name in sorted(set(names_a) & set(names_b)):
        ca = torch.load(a / "checkpoints" / name, map_location="cpu", weights_only=True)
        cb = torch.load(b / "checkpoints" / name, map_location="cpu", weights_only=True)
        config_a = _rebased(current_targets(ca.pop("config")), paths)
        found += differences(config_a, current_targets(cb.pop("config")), f"{name}:config")
        found += differences(ca, cb, name)
        tensors += tensor_count(ca)
    metrics_a = _rebased(json.loads((a / "metrics.json").read_text()), paths)
    metrics_b = json.loads((b / "metrics.json").read_text())
    found += differences(metrics_a, metrics_b, "metrics.json")
    return {"checkpoints": names_a, "tensors": tensors, "metrics": len(metrics_b), "differences": found,
            "step": metrics_b.get("step")}


def runs(root: Path) -> dict[str, Path]:
    """name -> run dir: `root` itself, or its sub-folders holding a metrics.json."""
    if (root / "metrics.json").is_file():
        return {root.name: root}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "metrics.json").is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--read-as", action="append", default=[], metavar="A_PATH=B_PATH",
                        help="a path in A's configs that stands for this one in B's (e.g. the two checkouts)")
    args = parser.parse_args()
    runs_a, runs_b = runs(args.a), runs(args.b)
    if (args.a / "metrics.json").is_file() and (args.b / "metrics.json").is_file():  # two run dirs: compare them
        runs_a, runs_b = {args.b.name: args.a}, {args.b.name: args.b}
    if not runs_a or set(runs_a) != set(runs_b):
        sys.exit(f"the run dirs differ or are missing: {sorted(runs_a)} in {args.a} vs {sorted(runs_b)} in {args.b}")
    read_as = dict(item.split("=", 1) for item in args.read_as)
    results = {name: compare_run(runs_a[name], runs_b[name], read_as) for name in sorted(runs_a)}
    for name, r in results.items():
        verdict = "IDENTICAL" if not r["differences"] else f"{len(r['differences'])} DIFFERENCES"
        print(f"{name:<16} step {r['step']}: {len(r['checkpoints'])} checkpoints, {r['tensors']} tensors, "
              f"{r['metrics']} metrics: {verdict}")
        for line in r["differences"][:10]:
            print(f"    {line}")
    same = all(not r["differences"] for r in results.values())
    print(json.dumps({"identical": same, "runs": {n: {k: v for k, v in r.items() if k != "differences"} | {
        "differences": len(r["differences"])} for n, r in results.items()}}))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
