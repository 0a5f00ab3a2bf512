"""The package's import graph: no cycles, and `data/` and `models/` import nothing from training.

Built with `ast` from the source (nothing is imported), counting every import: module-level ones and
the lazy ones inside functions, since a lazy import closes a cycle at run time just the same.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "emotionsumm"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# the training side: what `data/` and `models/` must never import, directly or through another module
TRAINING = tuple(f"{PACKAGE}.{name}" for name in (
    "training.trainer", "training.checkpoint", "train", "evaluate", "predict", "runs.sweep", "report",
    "config.builders", "training.state", "training.ema", "training.distributed", "tracking.loggers"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _internal(name: str) -> str | None:
    """The package module that `import name` executes last: `name` itself, else its longest module prefix
    (`emotionsumm.report.main` is the function main of emotionsumm.report); None outside the package."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str) -> set[str]:
    """The package modules that module `name` imports anywhere in its body (relative imports resolved)."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(_internal(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from . import distributed` imports a module; `from .config import flatten` a name of one
            found.update(_internal(f"{base}.{alias.name}") for alias in node.names)
    return {target for target in found if target is not None and target != name}


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imports_of(name)) for name in modules()}


def components(edges: dict[str, frozenset[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module: the modules tied together by cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """One cycle (as a path a -> … -> a) through every component of `components`."""
    return [_cycle_through(min(c), c, edges) for c in components(edges)]


def _cycle_through(start: str, component: set[str], edges: dict[str, frozenset[str]]) -> list[str]:
    """A shortest path start -> … -> start inside one strongly connected component."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(edges[node] & component):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"{start} is in a component without a cycle")


def path_to(start: str, targets: tuple[str, ...], edges: dict[str, frozenset[str]]) -> list[str] | None:
    """A shortest import chain from `start` to a module in (or under) `targets`, None if there is none."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(edges[node]):
                if nxt in paths:
                    continue
                paths[nxt] = [*paths[node], nxt]
                if any(nxt == t or nxt.startswith(f"{t}.") for t in targets):
                    return paths[nxt]
                nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return None


def in_package(name: str, package: str) -> bool:
    return name == f"{PACKAGE}.{package}" or name.startswith(f"{PACKAGE}.{package}.")


def test_the_graph_sees_relative_and_lazy_imports():
    """Guards the parser itself, so that an empty graph cannot pass the tests below."""
    edges = graph()
    assert {"emotionsumm.training.trainer", "emotionsumm.data", "emotionsumm.models.text"} <= set(edges)
    assert "emotionsumm.config.core" in edges["emotionsumm.training.distributed"]  # module level
    assert "emotionsumm.runs.layout" in edges["emotionsumm.report"]
    assert "emotionsumm.report" in edges["emotionsumm.runs.sweep"]  # inside SweepCallback.on_multirun_end
    assert "emotionsumm.training.distributed" in edges["emotionsumm.train"]  # `from . import distributed as dist`


def test_the_package_has_no_import_cycles():
    edges = graph()
    found = [f"{' -> '.join(_cycle_through(min(c), c, edges))}  (all tied together: {', '.join(sorted(c))})"
             for c in components(edges)]
    assert not found, "import cycles (lazy imports count):\n" + "\n".join(found)


def test_data_and_models_import_no_training_code():
    """`data/` and `models/` stand on their own: no trainer, checkpoint, entry point, sweep, logger or DDP
    code, not even through another module; `models/` does not read data either. (`data` may call `demo`
    to generate the embedded demo sets.)"""
    edges = graph()
    problems = []
    for name in sorted(edges):
        if in_package(name, "data") or in_package(name, "models"):
            chain = path_to(name, TRAINING, edges)
            if chain:
                problems.append(" -> ".join(chain))
        if in_package(name, "models"):
            chain = path_to(name, (f"{PACKAGE}.data", f"{PACKAGE}.demo"), edges)
            if chain:
                problems.append(" -> ".join(chain))
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_cycle_finder_reports_the_path():
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_policies_do_not_read_the_run_dir_layout():
    """A policy writes its figures where it is told; which files a run dir holds is `runs.layout`'s business
    and the report's, never a policy's (`policies.confusion_file` names the one file a policy writes)."""
    edges = graph()
    direct = {name: sorted(edges[name] & {f"{PACKAGE}.runs.layout", f"{PACKAGE}.training.trainer"})
              for name in edges if in_package(name, "policies")}
    assert len(direct) >= 3 and not any(direct.values()), direct
