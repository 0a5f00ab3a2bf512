"""The wheel's layout: every package on disk is listed, the configs ship inside it, run-time paths follow the user."""

from __future__ import annotations

import os
from pathlib import Path

import tomllib

from emotionsumm.config.core import CONFIG_DIR, PROJECT_ROOT

from .conftest import make_cfg

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def test_every_package_on_disk_is_in_the_wheel():
    """`packages` is an explicit list (it maps conf/ to emotionsumm.conf): a new subpackage must join it."""
    on_disk = {".".join(p.parent.relative_to(PROJECT_ROOT).parts) for p in (PROJECT_ROOT / "emotionsumm").rglob(
        "__init__.py") if "__pycache__" not in p.parts}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == on_disk | {"emotionsumm.conf"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"emotionsumm.conf": "conf"}


def test_every_config_is_package_data():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["emotionsumm.conf"]
    configs = {p.relative_to(CONFIG_DIR) for p in Path(CONFIG_DIR).rglob("*") if p.is_file()}
    assert configs and all(any(c.match(pattern) and len(c.parts) == len(Path(pattern).parts) for pattern in patterns)
                           for c in configs), configs


def test_console_scripts_and_extras():
    project = PYPROJECT["project"]
    assert project["scripts"] == {f"emotionsumm-{name}": f"emotionsumm.{name}:main"
                                  for name in ("train", "evaluate", "predict", "report", "init")}
    assert {"mlflow", "optuna", "slurm", "sweep", "dev"} <= set(project["optional-dependencies"])
    assert project["license"] == "MIT" and project["readme"] == "README.md" and project["requires-python"]
    assert all(any(op in dep for op in ("==", ">=")) for dep in project["dependencies"]), project["dependencies"]


def test_run_time_paths_follow_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("EMOTIONSUMM_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)
    paths = make_cfg(tmp_path / "run", []).paths
    assert (paths.output_root, paths.cache_dir) == (f"{tmp_path}/outputs", f"{tmp_path}/.cache")
    assert os.path.normpath(paths.shared_dir) == str(tmp_path.parent / "shared")
    monkeypatch.setenv("EMOTIONSUMM_SHARED", "/data/lab")
    assert make_cfg(tmp_path / "run", []).paths.shared_dir == "/data/lab"
    assert make_cfg(tmp_path / "run", ["paths.shared_dir=/elsewhere"]).paths.glue_dir == "/elsewhere/data/glue"


def test_init_writes_a_lab_project_and_refuses_a_non_empty_dir(tmp_path, capsys):
    from emotionsumm.init import main

    assert main([str(tmp_path / "My-Lab")]) == 0
    lab = tmp_path / "My-Lab"
    assert sorted(str(p.relative_to(lab)) for p in lab.rglob("*") if p.is_file()) == [
        "README.md", "my_lab/__init__.py", "my_lab/conf/__init__.py", "my_lab/conf/experiment/my_lab_text.yaml",
        "my_lab/conf/model/my_lab_text.yaml", "my_lab/models.py", "pyproject.toml", "tests/test_my_lab.py"]
    assert "_target_: my_lab.models.MeanPoolText" in (lab / "my_lab/conf/model/my_lab_text.yaml").read_text()
    assert "trust: [my_lab]" in (lab / "my_lab/conf/experiment/my_lab_text.yaml").read_text()
    assert 'dependencies = ["emotionsumm"]' in (lab / "pyproject.toml").read_text()
    readme = (lab / "README.md").read_text()
    assert "'trust=[my_lab]'" in readme and "'hydra.searchpath=[pkg://my_lab.conf]'" in readme
    before = {p: p.read_bytes() for p in lab.rglob("*") if p.is_file()}
    assert main([str(lab)]) == 2
    assert "is not an empty directory" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in lab.rglob("*") if p.is_file()} == before
    assert main([str(tmp_path / "os")]) == 2  # a stdlib name cannot be a trusted lab package
    assert "--package" in capsys.readouterr().err and not (tmp_path / "os").exists()
