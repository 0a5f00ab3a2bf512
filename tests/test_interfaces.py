"""The contracts in `interfaces.py` are the only ones: every shipped data class and policy has their shape, and
what an entry point asks of a data class is a protocol, not a concrete class."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hydra.utils import get_class

import emotionsumm.policies
from emotionsumm.config.core import CONFIG_DIR
from emotionsumm.interfaces import BaselineData, DataBuilder, FeatureManifestData, Policy

DATA = sorted({line.split(":", 1)[1].strip() for f in Path(CONFIG_DIR, "data").glob("*.yaml")
               for line in f.read_text().splitlines() if line.startswith("_target_:")})
POLICIES = sorted({line.split(":", 1)[1].strip() for f in Path(CONFIG_DIR, "policy").glob("*.yaml")
                   for line in f.read_text().splitlines() if line.startswith("_target_:")})
PACKAGE = Path(emotionsumm.policies.__file__).parent.parent


def _protocol_methods(protocol: type) -> set[str]:
    return {n for c in protocol.__mro__ if c.__module__ == "emotionsumm.interfaces" for n, v in vars(c).items()
            if callable(v) and not n.startswith("_")}


@pytest.mark.parametrize("target", DATA)
def test_shipped_data_classes_have_the_builder_shape_and_only_manifest_data_writes_manifests(target):
    cls = get_class(target)
    assert all(callable(getattr(cls, m, None)) for m in _protocol_methods(DataBuilder)), target
    assert issubclass(cls, FeatureManifestData) == target.endswith("MultimodalData"), target
    # every classification modality gives the baselines its examples; summarization has lead-k instead
    assert issubclass(cls, BaselineData) == (not target.endswith("DialogueSummaryData")), target


@pytest.mark.parametrize("target", POLICIES)
def test_shipped_policies_have_the_policy_shape(target):
    cls = get_class(target)
    assert all(callable(getattr(cls, m, None)) for m in _protocol_methods(Policy)), target


def test_one_policy_protocol_and_no_isinstance_on_concrete_data_classes():
    """`interfaces.Policy` is the only Protocol named Policy; entry points test data by protocol."""
    policies, concrete_checks = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name == "Policy":
                policies.append(path.relative_to(PACKAGE).as_posix())
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance" and len(node.args) == 2
                    and isinstance(node.args[1], ast.Name) and node.args[1].id.endswith("Data")
                    and node.args[1].id not in ("FeatureManifestData", "BaselineData")):
                concrete_checks.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert policies == ["interfaces.py"]
    assert not concrete_checks, concrete_checks
