"""Every `python -m emotionsumm.…` and `make …` command in the code blocks of README.md and docs/*.md runs as written.

Cheaply: `train` commands are composed in-process exactly as the CLI would (sweeps expanded into their
jobs as Hydra's basic sweeper does) and checked with `validate_config` (and, for multiruns, the sweep's
own start checks); `evaluate`, `predict` and `report` run in-process on tiny checkpoints trained once
per session; `make X ARGS=…` is expanded with `make -n` and the resulting command is run the same way.
A failing case is named after its page and command.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from emotionsumm.config.core import CONFIG_DIR, PROJECT_ROOT, register_resolvers, validate_config

from ..conftest import SHARED, TINY, make_cfg

README = PROJECT_ROOT / "README.md"
PAGES = [README, *sorted((PROJECT_ROOT / "docs").glob("*.md"))]  # the front page and the pages it links
# make targets that cannot run inside a test
SKIP_MAKE = {"test": "runs this test suite (it would recurse)", "tensorboard": "starts a server that never exits"}
ENTRY_POINTS = ("train", "evaluate", "predict", "report")


@dataclass(frozen=True)
class Command:
    page: str  # README.md or docs/<name>.md
    section: str  # the `## ` heading it is under (with the page, says what `<path>` stands for)
    text: str  # as written, continuation lines joined

    def __str__(self) -> str:
        return self.text


def page_commands(page: Path) -> list[Command]:
    """The commands of a page's bash code blocks that call an entry point or make."""
    name = page.relative_to(PROJECT_ROOT).as_posix()
    commands, section, lang, pending = [], "", None, ""
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            lang = None if lang is not None else line[3:].strip()
            continue
        if lang is None:
            section = line[3:].strip() if line.startswith("## ") else section
            continue
        if lang not in ("bash", "sh", "shell"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        text, pending = (pending + line.strip()).strip(), ""
        if re.search(r"-m emotionsumm\.\w+", text) or text.startswith("make "):
            commands.append(Command(name, section, text))
    return commands


COMMANDS = [command for page in PAGES for command in page_commands(page)]


def test_readme_has_the_commands_we_expect():
    assert len(COMMANDS) >= 40
    assert sum(c.text.startswith("make ") for c in COMMANDS) >= 10
    assert {c.page for c in COMMANDS} >= {"README.md", "docs/modalities.md", "docs/running.md"}


def anchor(heading: str) -> str:
    """GitHub's id of a Markdown heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_docs_pages_are_linked_and_links_resolve():
    """README links every docs page; every relative link of the pages names a file (and heading) that exists."""
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", README.read_text()))
    assert linked == {p.relative_to(PROJECT_ROOT).as_posix() for p in PAGES[1:]}
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
        for target, fragment in re.findall(r"\]\(([^)#:\s]*)(?:#([^)\s]+))?\)", text):
            file = (page.parent / target).resolve() if target else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif fragment and fragment not in {anchor(h) for h in re.findall(r"^#+ (.*)$", file.read_text(), re.M)}:
                broken.append(f"{page.name}: {target}#{fragment}")
    assert not broken, broken


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny trained run dirs (with checkpoints/last.ckpt) for the pages' `<run>` / `<path>` placeholders."""
    import torch

    from emotionsumm.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("readme_runs")
    short = ["trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
             "trainer.progress_bar=false", "logger=none", "scheduler.warmup_steps=1"]
    recipes = {
        "text": ["experiment=emotion_text", *TINY],
        "summarization": ["experiment=summarization", "model.d_model=32", "model.encoder_layers=1",
                          "model.decoder_layers=1", "model.attention_heads=2", "model.ffn_dim=64",
                          "data.vocab_size=300", "data.max_eval_examples=8", "policy.max_new_tokens=4",
                          "data.batch_size=8"],
        "audio": ["experiment=emotion_audio", "model.width=4", "model.depth=2", "data.batch_size=8"],
        "fusion": ["experiment=emotion_fusion", "model.hidden=8", "model.encoders.text.hidden_size=16",
                   "model.encoders.text.intermediate_size=32", "model.encoders.audio.width=4",
                   "model.encoders.audio.depth=2", "model.encoders.image.widths=[4,4,4]", "data.batch_size=8"],
    }
    for modality in ("text", "audio"):  # stage 1 of the two-stage feature fusion (docs/modalities.md)
        recipes[f"fusion_{modality}"] = [*recipes["fusion"], f"data.modalities=[{modality}]"]
    try:
        out = {}
        for name, overrides in recipes.items():
            train(make_cfg(root / name, [*overrides, *short]))
            assert (root / name / "checkpoints" / "last.ckpt").is_file()
            out[name] = root / name
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, runs) -> Path:
    """The current directory the pages' commands run in: the input files they name exist here."""
    def demo(experiment: str) -> DictConfig:  # the demo data the tiny runs generated
        return make_cfg(Path("/nonexistent"), [f"experiment={experiment}"]).data

    work = tmp_path_factory.mktemp("readme_cwd")
    (work / "texts.txt").write_text("i feel so lonely tonight\nwhat a wonderful surprise\n")
    dialogues = Path(demo("summarization").files.test).read_text().splitlines()[:2]
    (work / "dialogues.jsonl").write_text("".join(json.dumps({"dialogue": json.loads(r)["dialogue"]}) + "\n"
                                                  for r in dialogues))
    (work / "clips").mkdir()
    for wav in sorted(Path(demo("emotion_audio").root).rglob("*.wav"))[:2]:
        shutil.copy(wav, work / "clips" / wav.name)
    manifest = Path(demo("emotion_fusion").files.test)
    rows = [json.loads(r) for r in manifest.read_text().splitlines()[:2]]
    for row in rows:  # media paths are relative to the manifest: make them absolute for the copy
        row.pop("label", None)
        for key in ("audio", "image"):
            if row.get(key):
                row[key] = str(manifest.parent / row[key])
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the two-stage feature fusion: its stage-1 run dirs and the multimodal demo at the paths it names
    (work / "outputs/two_stage").mkdir(parents=True)
    for modality in ("text", "audio"):
        (work / "outputs/two_stage" / modality).symlink_to(runs[f"fusion_{modality}"])
    (work / ".cache/demo").mkdir(parents=True)
    (work / ".cache/demo/multimodal_emotion").symlink_to(manifest.parent)
    return work


# ---------------------------------------------------------------------------------------------- running


def substitute(command: Command, runs: dict[str, Path]) -> str:
    """Fill a page's placeholders with the tiny runs (`<path>` is a checkpoint of the page's or section's task)."""
    summarization = command.page == "docs/summarization.md" or command.section.startswith("Summarization")
    path_run = runs["summarization"] if summarization else runs["text"]
    text = command.text
    for pattern, value in [(r"outputs/emotion_text/<run>", runs["text"]), (r"outputs/multirun/<sweep>", runs["text"]),
                           (r"<audio run>", runs["audio"]), (r"<fusion run>", runs["fusion"]),
                           (r"<path>", path_run / "checkpoints" / "last.ckpt"), (r"<host of node 0>", "localhost"),
                           (r"<job id>", "1")]:
        text = re.sub(pattern, str(value), text)
    return text


def expand_make(tokens: list[str]) -> list[str]:
    """`make target VAR=…` -> the entry-point command it runs (`make -n`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")}
    # (under `make test ARGS=…` the outer make's variables would reach this make through MAKEFLAGS)
    proc = subprocess.run(["make", "-n", *tokens[1:]], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "-m emotionsumm." in line]
    assert len(lines) == 1, proc.stdout
    return shlex.split(lines[0])


def job_overrides(args: list[str]) -> list[list[str]]:
    """The overrides of every job the command would run (one job unless it sweeps), as Hydra expands them."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().hydra.config_loader)
        parsed = parser.parse_overrides(args)
        # an interval (Optuna) is not a list of jobs: its lower bound stands for it
        args = [f"{o.get_key_element()}={o.value().start}" if o.is_sweep_override() and not o.is_discrete_sweep()
                else o.input_line for o in parsed]
        return BasicSweeper.split_arguments(parser.parse_overrides(args), None)[0]


def compose_train(overrides: list[str]) -> DictConfig:
    """Compose conf/train.yaml like the CLI (Hydra config included), or raise what the CLI would print."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def check_train(args: list[str], multirun: bool) -> None:
    from emotionsumm.runs.sweep import SweepError, check_launcher, check_swept_keys

    jobs = job_overrides(args)
    multirun = multirun or len(jobs) > 1
    for job in jobs:
        cfg = compose_train(job)
        if multirun or cfg.hydra.mode == "MULTIRUN":  # what SweepCallback checks before any job starts
            check_swept_keys(cfg)
            if str(cfg.hydra.launcher._target_).endswith("SlurmLauncher") and shutil.which("sbatch") is None:
                with pytest.raises(SweepError, match="no `sbatch` on PATH"):  # the documented early failure
                    check_launcher(cfg)
            else:
                check_launcher(cfg)
        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        with open_dict(job_cfg):
            job_cfg.paths.output_dir = "/nonexistent/readme-compose-only"
        validate_config(job_cfg)


def run_entry_point(module: str, args: list[str], stdin: bytes | None, out: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin or b"")))
    if module == "report":
        from emotionsumm.report import main

        assert main(args) == 0
        return
    if module == "evaluate" and "baseline=lead3" in args and not (SHARED / "data" / "dialogsum").is_dir():
        pytest.skip(f"real data not found in {SHARED}/data")
    out.mkdir(parents=True)  # the run dir Hydra would create
    cfg = make_cfg(out, args, config_name=module)
    if module == "evaluate":
        from emotionsumm.evaluate import evaluate

        assert evaluate(cfg)
    else:
        from emotionsumm.predict import predict

        rows = predict(cfg)
        assert rows and all(rows)
        if cfg.export_embeddings:
            assert Path(cfg.embeddings_path).is_file()


def needs_runs(command: Command) -> bool:
    """Commands that read a run, a checkpoint or an input file (the others only compose)."""
    return "<" in command.text or bool(re.search(r"-m emotionsumm\.(evaluate|predict|report)|make report",
                                                 command.text))


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{i:02d}:{Path(c.page).stem}:{c.text.split('  #')[0][:70].strip()}"
                                                   for i, c in enumerate(COMMANDS)])
def test_readme_command_runs(command: Command, request, tmp_path, monkeypatch):
    make_target = re.match(r"make ([\w-]+)", command.text)
    if make_target and make_target[1] in SKIP_MAKE:
        pytest.skip(f"make {make_target[1]}: {SKIP_MAKE[make_target[1]]}")
    runs = request.getfixturevalue("runs") if needs_runs(command) else {}
    workdir = request.getfixturevalue("workdir") if needs_runs(command) else tmp_path
    text = substitute(command, runs) if runs else command.text
    stdin = None
    if " | " in text:  # the producer of a pipe is a plain shell command (echo, printf, ls): run it as written
        producer, text = text.split(" | ", 1)
        stdin = subprocess.run(producer, shell=True, cwd=workdir, capture_output=True, check=True).stdout
    tokens = shlex.split(text, comments=True)
    assert not [t for t in tokens if re.search("<.*>", t)], f"a placeholder this test does not know: {text!r}"
    # `[opt=value]` marks an optional argument: run with it
    tokens = [t[1:-1] if re.fullmatch(r"\[[\w.+~]+=[^,\]]*\]", t) else t for t in tokens]
    if tokens[0] == "make":
        tokens = expand_make(tokens)
    at = next(i for i, t in enumerate(tokens) if t == "-m" and tokens[i + 1].startswith("emotionsumm."))
    module, args = tokens[at + 1].removeprefix("emotionsumm."), tokens[at + 2:]
    assert module in ENTRY_POINTS, module
    multirun = any(a in ("-m", "--multirun") for a in args)
    args = [a for a in args if a not in ("-m", "--multirun")]
    if "--cfg" in args:  # `--cfg job` only prints the composed config
        i = args.index("--cfg")
        assert args[i + 1] in ("job", "hydra", "all")
        args = args[:i] + args[i + 2:]
    monkeypatch.chdir(workdir)
    # the real data, as a user outside the checkout reaches it (`../shared` of a temp dir is not it)
    monkeypatch.setenv("EMOTIONSUMM_SHARED", str(SHARED))
    if module == "train":
        check_train(args, multirun)
    else:
        run_entry_point(module, args, stdin, tmp_path / "out", monkeypatch)
