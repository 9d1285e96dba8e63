"""The edge install is torch-free: `pip install corekit[edge]` must not pull in PyTorch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
HEAVY = {"torch", "lightning", "torchmetrics", "transformers", "onnxscript"}


def requirement_names(requirements: list[str], extras: dict[str, list[str]], seen: set[str]) -> set[str]:
    names = set()
    for req in requirements:
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()
        if name == "corekit":  # a self-reference such as corekit[train]: follow its extras
            for extra in re.search(r"\[(.*)\]", req).group(1).split(","):
                if extra not in seen:
                    seen.add(extra)
                    names |= requirement_names(extras[extra], extras, seen)
        else:
            names.add(name)
    return names


def test_base_and_edge_dependencies_exclude_torch():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    edge = requirement_names(project["dependencies"] + extras["edge"], extras, set())
    assert {"onnxruntime", "numpy", "tokenizers"} <= edge
    assert not edge & HEAVY, edge & HEAVY
    full = requirement_names(extras["all"], extras, set())
    assert {"torch", "lightning", "onnx", "onnxscript", "onnxruntime"} <= full
    assert "corekit-edge" in project["scripts"]
