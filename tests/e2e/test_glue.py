"""`make glue` end to end on generated GLUE files: a multirun over CoLA, STS-B and MNLI with a tiny model whose
jobs write the official metrics and whose sweep report ends the run with the GLUE table."""

from __future__ import annotations

import json
import re

import pytest

from emotionsumm.report import _fmt

from ..conftest import TINY, cli


def test_glue_multirun_on_demo_files_writes_official_metrics_and_the_glue_table(tmp_path):
    sweep = tmp_path / "sweep"
    run = cli("train", "--multirun", "experiment=glue", "data=glue_cola,glue_stsb,glue_mnli", *TINY,
              "data.demo=true", f"data.demo_dir={tmp_path / 'demo'}", f"data.tokenizer_cache_dir={tmp_path / 'tok'}",
              "trainer.max_steps=6", "trainer.val_every_n_steps=3", f"hydra.sweep.dir={sweep}")
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = {}
    for job in sorted(sweep.glob("[0-9]*-*")):
        task = re.search(r"glue_(\w+)", (job / ".hydra/overrides.yaml").read_text()).group(1)
        metrics[task] = json.loads((job / "metrics.json").read_text())
    assert set(metrics) == {"cola", "stsb", "mnli"}
    cola, stsb, mnli = metrics["cola"], metrics["stsb"], metrics["mnli"]
    assert -1 <= cola["val/mcc"] <= 1 and cola["val/score"] == cola["val/mcc"] and "best/val/score" in cola
    assert -1 <= stsb["val/pearson"] <= 1 and -1 <= stsb["val/spearman"] <= 1 and "val/acc" not in stsb
    assert stsb["val/score"] == pytest.approx((stsb["val/pearson"] + stsb["val/spearman"]) / 2)
    assert "test/acc" in mnli and "test/acc" not in cola  # MNLI's mismatched dev is its test split
    report = (sweep / "report.md").read_text()
    table = report[report.index("## GLUE"):report.index("## Jobs")]
    assert f"| CoLA | {_fmt(cola['val/mcc'])} |" in table
    assert f"{_fmt(stsb['val/pearson'])} | {_fmt(stsb['val/spearman'])} | {_fmt(stsb['val/score'])} |" in table
    average = (cola["val/mcc"] + stsb["val/score"] + mnli["val/acc"]) / 3
    assert re.search(rf"\| GLUE average \(3 of 9 tasks\) \|(\s+\|)+ {re.escape(_fmt(average))} \| 3 \|", table), table
    assert "MNLI-mm (test split, not averaged)" in table
