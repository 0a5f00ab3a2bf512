"""A GLUE task read from its distributed TSV files under `paths.glue_dir` (or generated demo files).

The format of each task (columns, header, label values, classification or regression, official metrics) is
written in its config `conf/data/glue_<task>.yaml`; this class only roots the task's files in the GLUE folder
and says what to do when one is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .table import Row
from .text import TextClassificationData


class GlueData(TextClassificationData):
    """Text classification (or, for STS-B, regression) data of one GLUE task (`glue_task`, e.g. `cola`).

    `files` are relative to `glue_dir` (`paths.glue_dir`, the folder holding CoLA/, SST-2/, … as distributed),
    or with `demo=true` to `demo_dir`, where small files in the same formats are generated for all nine tasks.
    `dev` is the validation split; GLUE's test labels are private, so only MNLI has a test split here
    (`dev_mismatched.tsv`). `score_metrics` are the task's official metrics, whose mean the policy logs as
    `score` (GLUE's task score). Every other key is TextClassificationData's.
    """

    def __init__(self, glue_task: str, glue_dir: str | None, files: dict[str, str | None],
                 demo: bool = False, demo_dir: str | None = None, monitor: str | None = None,
                 **text: Any) -> None:
        self.glue_task = glue_task
        self.monitor = monitor  # the task's score, which trainer.monitor follows (conf/trainer/default.yaml)
        self.root = Path(str(demo_dir if demo else glue_dir)).expanduser()
        rooted = {split: str(self.root / name) if name else None for split, name in files.items()}
        super().__init__(files=rooted, demo=demo, demo_dir=demo_dir, **text)

    def make_demo(self, directory: Path) -> None:
        from ..demo.glue import make_glue

        make_glue(directory)

    def read(self, path: str | Path | None, key: str, split: str | None) -> list[Row]:
        """The rows of one task file; a missing file names it, `paths.glue_dir` and the alternatives."""
        file = Path(str(path))
        if not file.is_file():
            raise FileNotFoundError(
                f"GLUE {self.glue_task}: {file} not found ({key} under paths.glue_dir={self.root}); set "
                "paths.glue_dir=<the folder holding CoLA/, SST-2/, MRPC/, QQP/, STS-B/, MNLI/, QNLI/, RTE/, WNLI/ as "
                "distributed>, or data.demo=true for generated demo files in the same formats")
        return self.read_table(file, key, split)

    def describe(self) -> str:
        return f"; GLUE {self.glue_task} from {self.root}"
