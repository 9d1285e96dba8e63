"""Shared fixtures. Tests never see plugins installed on the machine: entry-point
autoloading is off, and a test that needs a third-party plugin installs it itself."""

from __future__ import annotations

import os

os.environ["COREKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.pop("COREKIT_REGISTRY", None)

import pytest  # noqa: E402

from corekit.plugins import load_registry, set_registry  # noqa: E402


@pytest.fixture(scope="session")
def registry():
    """The built-in plugins only."""
    return load_registry(autoload=False)


@pytest.fixture(autouse=True)
def _fresh_shared_registry(monkeypatch, tmp_path_factory):
    """Each test starts with the shared registry unloaded and no ./registry.toml in reach."""
    set_registry(None)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    set_registry(None)



@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A small model trained for 80 steps on generated text (bytes tokenizer):
    a real trained run directory, shared by the export and edge tests."""
    from bundles import train_small_run

    return train_small_run(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def bundle(trained_run, tmp_path_factory):
    """``trained_run`` exported as an fp32 bundle."""
    from corekit.export.bundle import export_run

    return export_run(trained_run, tmp_path_factory.mktemp("bundles") / "fp32").out


@pytest.fixture(scope="session")
def bundle_int8(trained_run, tmp_path_factory):
    """``trained_run`` exported as an int8 bundle; returns the export report."""
    from corekit.export.bundle import export_run

    return export_run(trained_run, tmp_path_factory.mktemp("bundles") / "int8", quantize="int8")
