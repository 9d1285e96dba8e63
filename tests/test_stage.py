"""Stages as plugins: the run spec is assembled from the registered stages, `corekit run` is a loop
over them, and commands come in through a hook; the core names no stage."""

from __future__ import annotations

import ast
import io
import types
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from corekit import hookimpl
from corekit.errors import CorekitError, SpecError
from corekit.params import StageParams
from corekit.plugins import load_registry
from corekit.rundir import RunDir
from corekit.spec import load_spec, run_spec_type, spec_schema
from corekit.stage import RunContext, Stage, run_stages, stages

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"attention": {"n_heads": 2}, "d_model": 8, "n_layers": 1, "context_length": 8}


class NotesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field("hello", description="what to write")


class NotesParams(StageParams):
    name: Literal["notes"] = "notes"


class NotesStage(Stage):
    """Writes RUN/notes.txt from [notes]; current when the file says the same."""

    name = "notes"
    section = "notes"
    order = 5
    calls: list[str] = []

    def section_field(self) -> tuple[Any, Any]:
        return NotesSpec | None, Field(None, description="notes to write")

    def wanted(self, spec) -> bool:
        return spec.notes is not None

    def current(self, ctx) -> bool:
        path = ctx.run.path / "notes.txt"
        return path.is_file() and path.read_text() == ctx.spec.notes.text

    def run(self, ctx) -> None:
        from corekit.io import atomic_write_text

        NotesStage.calls.append("run")
        atomic_write_text(ctx.run.path / "notes.txt", ctx.spec.notes.text)


def _plugin(*stage_classes, commands=None) -> types.ModuleType:
    module = types.ModuleType("stage_test_plugin")

    def register(registry):
        for cls in stage_classes:
            params = type(f"{cls.__name__}Params", (StageParams,), {"__annotations__": {"name": Literal[cls.name]},
                                                                     "name": cls.name})
            registry.add("stage", params, cls)

    module.corekit_register_components = hookimpl(register)
    if commands is not None:
        module.corekit_register_commands = hookimpl(commands)
    return module


def test_a_plugin_stage_adds_its_section_to_the_run_spec():
    registry = load_registry(autoload=False, plugins=[_plugin(NotesStage)])
    fields = list(run_spec_type(registry).model_fields)
    assert fields[:2] == ["model", "changes"] and "notes" in fields
    assert fields.index("notes") < fields.index("tokenizer")  # ordered by stage order
    spec = load_spec({"model": MODEL, "notes": {"text": "hi"}}, registry=registry)
    assert spec.notes.text == "hi"
    with pytest.raises(SpecError, match=r"notes\.txt.*unknown field 'txt'; allowed: text") as info:
        load_spec({"model": MODEL, "notes": {"txt": "hi"}}, registry=registry)
    assert "notes.txt" in str(info.value)
    schema = spec_schema(registry)
    assert schema["$defs"]["NotesSpec"]["additionalProperties"] is False
    # without the plugin, [notes] is an unknown section that names the sections there are
    with pytest.raises(SpecError, match=r"unknown section 'notes'; allowed: .*tokenizer.*train"):
        load_spec({"model": MODEL, "notes": {"text": "hi"}}, registry=load_registry(autoload=False))


def test_two_stages_claiming_one_section_is_an_error():
    class Other(NotesStage):
        name = "other"

    registry = load_registry(autoload=False, plugins=[_plugin(NotesStage, Other)])
    with pytest.raises(CorekitError, match=r"stages 'notes' and 'other' both claim the spec section \[notes\]"):
        run_spec_type(registry)


def test_run_stages_runs_what_is_wanted_in_order_and_skips_what_is_current(tmp_path):
    order: list[str] = []

    def recording(cls_name: str, stage_order: int, section: str | None = None):
        class Recording(Stage):
            name = cls_name
            order = stage_order

            def run(self, ctx) -> None:
                order.append(self.name)
        return Recording

    registry = load_registry(autoload=False, plugins=[_plugin(NotesStage, recording("zz_last", 99),
                                                              recording("aa_first", 1))])
    spec = load_spec({"model": MODEL, "notes": {"text": "hi"}}, registry=registry)
    names = [s.name for s in stages(registry)]
    assert names[:2] == ["aa_first", "notes"] and names[-1] == "zz_last"

    # only the test's stages run: the built-in ones are switched off for this registry
    for name in ("tokenizer", "data", "train", "evaluate", "compress", "export", "finetune"):
        registry.remove("stage", name)
    err = io.StringIO()
    ctx = RunContext(spec, RunDir(tmp_path), registry, Console(file=err), Console(file=io.StringIO()))
    NotesStage.calls.clear()
    run_stages(ctx)
    assert order == ["aa_first", "zz_last"] and NotesStage.calls == ["run"]
    assert (tmp_path / "notes.txt").read_text() == "hi"
    run_stages(ctx)  # notes.txt says the same: skipped
    assert NotesStage.calls == ["run"] and "notes: current; skipped" in err.getvalue()
    no_notes = load_spec({"model": MODEL}, registry=registry)
    run_stages(RunContext(no_notes, RunDir(tmp_path / "other"), registry, Console(file=err), Console(file=err)))
    assert NotesStage.calls == ["run"]  # not wanted without [notes]


def test_builtin_stages_own_their_sections(registry):
    owned = {s.name: s.section for s in stages(registry)}
    assert owned == {"tokenizer": "tokenizer", "data": "data", "train": "train", "evaluate": None,
                     "compress": "compress", "export": "export", "finetune": "finetune"}


def test_plugin_commands_come_through_the_hook_and_conflicts_name_both(capsys, monkeypatch):
    from typer.testing import CliRunner

    from corekit.cli.main import make_app

    def hello(app):
        def greet(name: str = "world") -> None:
            print(f"hello {name}")
        app.command("greet")(greet)

    registry = load_registry(autoload=False, plugins=[_plugin(commands=hello)])
    result = CliRunner().invoke(make_app(registry), ["greet", "--name", "corekit"])
    assert result.exit_code == 0 and "hello corekit" in result.output
    assert "train" in CliRunner().invoke(make_app(registry), ["--help"]).output  # built-ins too

    def clash(app):
        app.command("train")(lambda: None)

    clashing = load_registry(autoload=False, plugins=[_plugin(commands=clash)])
    with pytest.raises(CorekitError, match=r"two plugins add the command `corekit train`: corekit:corekit_plugins"
                                           r"\.commands and <explicit>:stage_test_plugin"):
        make_app(clashing)


# --------------------------------------------------------------------------- what the core imports
def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


@pytest.mark.parametrize("module", ["spec.py", "assemble.py"])
def test_spec_and_assembly_import_no_stage(module):
    later = ("corekit.finetune", "corekit.compress", "corekit.export", "corekit.cli", "corekit.data",
             "corekit.train", "corekit_plugins")
    imported = _imports(ROOT / "corekit" / module)
    assert not [m for m in imported if m.startswith(later)], imported


def test_no_cli_module_imports_another_cli_modules_command():
    cli = ROOT / "corekit" / "cli"
    for path in cli.glob("*.py"):
        others = {m for m in _imports(path) if m.startswith("corekit.cli.") and m != f"corekit.cli.{path.stem}"}
        assert not others, (path.name, others)
