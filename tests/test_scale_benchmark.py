"""benchmarks/scale.py: its generated corpora are read by the framework's data modules as they stand, and its
last line carries the keys of the issue-29 contract."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # scale.py imports its neighbours as a script does
_spec = importlib.util.spec_from_file_location("scale", ROOT / "benchmarks" / "scale.py")
scale = importlib.util.module_from_spec(_spec)
sys.modules["scale"] = scale  # dataclasses look their module up
_spec.loader.exec_module(scale)
from common import compose_experiment  # noqa: E402  (benchmarks/ is on the path from here on)

# per modality: examples generated, and the classes the data module must find
CASES = {"text": (60, 6), "audio": (48, 6), "image": (70, 7), "features": (40, 4), "dialogue": (40, None)}


def files(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_generated_corpus_is_read_by_its_experiment(name: str, tmp_path: Path) -> None:
    n, classes = CASES[name]
    overrides = scale.corpus(name, tmp_path, n, image_size=48)
    assert scale.corpus(name, tmp_path, n, image_size=48) == overrides  # generated once, then reused
    modality = scale.MODALITIES[name]
    cfg = compose_experiment(modality.experiment, [*overrides, *modality.model, f"paths.cache_dir={tmp_path / 'c'}"])
    assert cfg.data.demo is False
    before = files(tmp_path / "data")
    data = instantiate(cfg.data)
    data.setup(None)
    sizes = [len(data.dataset(split)) for split in ("train", "val", "test")]
    assert sum(sizes) == n and min(sizes) > 0, sizes  # every row read, each split non-empty
    if classes is not None:
        assert len(data.class_names) == classes
    batch = data.collate([data.dataset("train")[i] for i in range(2)])
    assert all(len(v) == 2 for v in batch.values() if hasattr(v, "__len__")), {k: len(v) for k, v in batch.items()}
    assert files(tmp_path / "data") == before  # nothing written next to the user's data (caches: paths.cache_dir)


def test_corpora_are_deterministic(tmp_path: Path) -> None:
    for name in ("text", "features"):
        first, second = tmp_path / f"{name}-a", tmp_path / f"{name}-b"
        first.mkdir(), second.mkdir()
        scale.MODALITIES[name].make(first, 30)
        scale.MODALITIES[name].make(second, 30)
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert files and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def row(**extra: float) -> dict[str, float]:
    return {"examples": 10, "setup_s": 1.0, "setup_warm_s": 0.5, "peak_rss_mb": 300.0, "samples_per_s": 900.0,
            "data_share": 0.05, "samples_per_s_w0": 800.0, "data_share_w0": 0.2, "cache_mb": 1.5, **extra}


def test_last_line_holds_the_contract_keys() -> None:
    results = {"text": {"1x": row(), "10x": row(setup_s=3.0)}, "image": {"1x": row()}}
    out = scale.assemble(results, threads=1, command="python benchmarks/scale.py")
    printed = scale.table(results, workers=2) + "\n" + json.dumps(out) + "\n"
    last = scale.parse_last_json(printed)
    assert last["threads"] == 1 and last["command"] == "python benchmarks/scale.py"
    for name, sizes in results.items():
        for size in sizes:
            assert set(scale.CONTRACT) <= set(last[name][size])
    assert last["text"]["10x"]["setup_s"] == 3.0
    assert printed.count("\n| text |") == 2 and "| image | 1x | 10 | 1.0 | 0.5 | 300 | 800 | 20.0 % |" in printed
    assert "| samples/s w2 | data share w2 |" in printed


def test_a_result_without_a_contract_key_is_refused() -> None:
    broken = row()
    del broken["setup_warm_s"]
    with pytest.raises(ValueError, match="audio 10x: no setup_warm_s measured"):
        scale.assemble({"audio": {"10x": broken}})
