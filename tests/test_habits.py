"""Habits the test command keeps: the lint and type-check configurations in pyproject.toml pass,
and no ``# type: ignore`` goes without a reason beside it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["corekit", "plugins", "tests", "benchmarks", "examples", "scripts"]


@pytest.mark.slow
def test_ruff_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_mypy_passes():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


IGNORE = re.compile(r"(?<!`)#\s*type:\s*ignore(\[[^\]]*\])?(?P<rest>.*)$")  # not one quoted in prose


def test_every_type_ignore_says_why():
    bare = []
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                match = IGNORE.search(line)
                if match is None:
                    continue
                reason = re.sub(r"#\s*noqa(:\s*[A-Z0-9, ]+)?", "", match["rest"]).strip(" #()")
                if not match.group(1) or len(reason) < 10:  # a code, and a reason in words
                    bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, "type: ignore without an error code and a reason:\n" + "\n".join(bare)
