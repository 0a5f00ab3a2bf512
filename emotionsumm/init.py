"""`python -m emotionsumm.init <dir>` (`emotionsumm-init`): write a small lab project that uses emotionsumm.

The project shows how a lab extends the framework without forking it: its own package with a model
class (a subclass of the shipped text classifier), its own `conf/` (an experiment and a model config
naming that class) composed with `hydra.searchpath`, `trust=[<package>]` for its checkpoints, a README
with the commands and one test. Nothing is written into a directory that is not empty.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .config.trust import trust_error

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{project}"
version = "0.1.0"
description = "{package}: experiments on emotionsumm"
requires-python = ">=3.10"
dependencies = ["emotionsumm"]

[project.optional-dependencies]
dev = ["pytest"]

[tool.setuptools.packages.find]
include = ["{package}*"]

[tool.setuptools.package-data]
"{package}" = ["conf/*/*.yaml"]
"""

MODELS = '''\
"""{package}'s models: classes of its own, built by `_target_` from {package}/conf/."""

from __future__ import annotations

import torch
from emotionsumm.models.text import TextClassifier


class MeanPoolText(TextClassifier):
    """The shipped text classifier, pooled by the mean of its token states instead of the [CLS] state."""

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {{"token_type_ids": token_type_ids}} if token_type_ids is not None else {{}}
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return self.pooled((states * mask).sum(1) / mask.sum(1).clamp(min=1.0))
'''

MODEL_CONF = """\
# the shipped small BERT (model/text_bert_small.yaml), pooled by {package}'s own class
defaults:
  - text_bert_small
  - _self_

_target_: {package}.models.MeanPoolText
"""

EXPERIMENT_CONF = """\
# @package _global_
# {package}'s experiment: the demo text emotion data with its own model class.
# Train: python -m emotionsumm.train hydra.searchpath=[pkg://{package}.conf] experiment={experiment}
defaults:
  - override /data: text_emotion_demo
  - override /model: {experiment}
  - override /scheduler: cosine

# the checkpoints of this experiment build {package}.models.MeanPoolText: this command trusts {package}
trust: [{package}]
optimizer:
  lr: 2e-3
scheduler:
  warmup_steps: 50
trainer:
  max_epochs: 4
"""

TEST = '''\
"""{package}'s experiment trains with its own model class, tests its best checkpoint and predicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "data.vocab_size=400", "trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "scheduler.warmup_steps=1", "trainer.progress_bar=false", "logger=none"]


def test_experiment_trains_tests_and_predicts(tmp_path):
    run = tmp_path / "run"
    train = [sys.executable, "-m", "emotionsumm.train", "hydra.searchpath=[pkg://{package}.conf]",
             "experiment={experiment}", *TINY, f"hydra.run.dir={{run}}"]
    proc = subprocess.run(train, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test/acc" in (run / "metrics.json").read_text()
    predict = [sys.executable, "-m", "emotionsumm.predict", f"ckpt={{run}}/checkpoints/last.ckpt", "input=-",
               "trust=[{package}]"]
    proc = subprocess.run(predict, check=False, cwd=tmp_path, input="what a lovely day\\n", capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.splitlines()) == 1
'''

README = """\
# {project}

Experiments on [emotionsumm](https://pypi.org/project/emotionsumm/) without forking it: this repository holds
its own model class (`{package}/models.py`: `MeanPoolText`, the shipped text classifier pooled by the mean of
its tokens) and its own configs (`{package}/conf/`), composed with emotionsumm's through `hydra.searchpath`.

```bash
pip install -e '.[dev]'          # emotionsumm comes with it
python -m emotionsumm.train 'hydra.searchpath=[pkg://{package}.conf]' experiment={experiment}
```

Runs land in `./outputs/<experiment>/<time>-<id>/` of the directory you run from, generated demo data in
`./.cache`. Every emotionsumm override works (`trainer.max_steps=50`, `optimizer.lr=1e-3`, `--cfg job`).
Without installing, `PYTHONPATH=. python -m emotionsumm.train 'hydra.searchpath=[file://'$PWD'/{package}/conf]' …`
does the same.

## Trust

A checkpoint's config names the classes it is rebuilt from; emotionsumm builds only what the command you run
trusts: its own classes, the targets named by the configs the command composes, and the packages you list in
`trust=[…]`. The experiment sets `trust: [{package}]`, so training, the test of the best checkpoint after fit
and resuming trust this package. For `evaluate` and `predict`, say it on the command line (a checkpoint can
never widen the list itself):

```bash
RUN=outputs/{experiment}/<time>-<id>
python -m emotionsumm.evaluate ckpt=$RUN/checkpoints/last.ckpt split=test 'trust=[{package}]'
echo "what a lovely day" | python -m emotionsumm.predict ckpt=$RUN/checkpoints/last.ckpt input=- 'trust=[{package}]'
python -m emotionsumm.train 'hydra.searchpath=[pkg://{package}.conf]' experiment={experiment} \\
    hydra.run.dir=$RUN trainer.resume=auto trainer.max_epochs=6
```

## Add your own

- a model: a class in `{package}/models.py` and `{package}/conf/model/<name>.yaml` with its `_target_`;
- data, policies, loggers: the same, under `{package}/conf/data/`, `policy/`, `logger/`;
- an experiment: `{package}/conf/experiment/<name>.yaml` (`# @package _global_`, `override /model: <name>`).

`python -m pytest` runs `tests/test_{package}.py`: the experiment trains a few steps, tests and predicts.
"""


def package_name(directory: Path) -> str:
    """A Python package name from the directory's name (`My-Lab` -> `my_lab`)."""
    name = re.sub(r"\W+", "_", directory.resolve().name.lower()).strip("_")
    return name if name and not name[0].isdigit() else f"lab_{name}"


def write_project(directory: Path, package: str | None = None) -> list[Path]:
    """Write the lab project into `directory` (new or empty); returns the files written."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} is not an empty directory; emotionsumm.init writes a new project only "
                              "into a new or empty directory (choose another path, or empty this one)")
    package = package or package_name(directory)
    if not package.isidentifier() or (error := trust_error(package)) is not None:
        raise ValueError(f"--package={package!r} cannot be a lab package: "
                         f"{error if package.isidentifier() else 'not a Python identifier'}; "
                         "choose another name with --package NAME")
    experiment = f"{package}_text"
    values = {"package": package, "project": package.replace("_", "-"), "experiment": experiment}
    files = {
        "pyproject.toml": PYPROJECT, "README.md": README,
        f"{package}/__init__.py": '"""{package}: a lab on emotionsumm."""\n',
        f"{package}/models.py": MODELS, f"{package}/conf/__init__.py": "",
        f"{package}/conf/model/{experiment}.yaml": MODEL_CONF,
        f"{package}/conf/experiment/{experiment}.yaml": EXPERIMENT_CONF, f"tests/test_{package}.py": TEST,
    }
    written = []
    for relative, template in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emotionsumm.init",
                                     description="Write a small lab project that extends emotionsumm from its own "
                                                 "repository: a model class, conf/, a README and a test.")
    parser.add_argument("directory", type=Path, help="a new or empty directory")
    parser.add_argument("--package", help="the lab's Python package (default: from the directory's name)")
    args = parser.parse_args(argv)
    try:
        files = write_project(args.directory, args.package)
    except (FileExistsError, ValueError) as exc:
        print(f"emotionsumm.init: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} files into {args.directory}:")
    print("\n".join(f"  {f.relative_to(args.directory)}" for f in files))
    print(f"next: cd {args.directory} && pip install -e '.[dev]' && python -m pytest  (see README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
