"""Strict specs, end to end: a spec that validates must not crash a later stage.

Each bad value found by fuzzing the spec loader is refused through the real CLI (in-process)
with exit code 2, a message naming the field path, no traceback, and nothing written; and
the nearest valid value still validates.
"""

from __future__ import annotations

import importlib
import signal
import sys
import warnings
from pathlib import Path

import pytest

from corekit.cli.main import main
from corekit.plugins import AUTOLOAD_ENV

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """Run ``corekit ARGS`` in-process the way the console script does: ``(code, stdout, stderr)``."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny(tmp_path: Path, extra: str = "") -> Path:
    """examples/tiny.toml copied into ``tmp_path`` (plus ``extra`` TOML text)."""
    path = tmp_path / "spec.toml"
    path.write_text((EXAMPLES / "tiny.toml").read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show that nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(code: int, out: str, err: str, *needles: str) -> None:
    output = out + err
    assert code == 2, output
    assert "Traceback" not in output
    assert err.startswith("error: "), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"


# (id, --set overrides or extra TOML, field path and other text the message must name)
TRAIN_CASES = [
    ("export-unknown-key", '\nquantise = "int8"\n', ["export.quantise", "unknown field", "quantize"]),
    ("adamw-betas", ["train.optimizer.betas=[2, -1]"], ["train.optimizer.betas.0", "train.optimizer.betas.1"]),
    ("adamw-beta-one", ["train.optimizer.betas=[0.9, 1.0]"], ["train.optimizer.betas.1", "less than 1"]),
    ("adamw-eps-zero", ["train.optimizer.eps=0"], ["train.optimizer.eps", "greater than 0"]),
    ("lion-betas", ["train.optimizer.name='lion'", "train.optimizer.betas=[-0.1, 0.99]"], ["train.optimizer.betas.0"]),
    ("sgd-momentum-one", ["train.optimizer.name='sgd'", "train.optimizer.momentum=1.0"], ["train.optimizer.momentum"]),
    ("sgd-dampening", ["train.optimizer.name='sgd'", "train.optimizer.dampening=1.5"], ["train.optimizer.dampening"]),
    ("sgd-nesterov-without-momentum", ["train.optimizer.name='sgd'", "train.optimizer.nesterov=true",
                                       "train.optimizer.momentum=0"], ["train.optimizer.nesterov", "momentum=0.0"]),
    ("sgd-nesterov-with-dampening", ["train.optimizer.name='sgd'", "train.optimizer.nesterov=true",
                                     "train.optimizer.dampening=0.1"], ["train.optimizer.nesterov", "dampening=0.1"]),
    ("devices-negative", ["train.devices=-3"], ["train.devices", "-3", "'auto'"]),
    ("devices-zero", ["train.devices=0"], ["train.devices", "positive"]),
    ("devices-bool", ["train.devices=true"], ["train.devices"]),
    ("devices-list", ["train.devices=[0, 1]"], ["train.devices"]),
    ("strategy-bogus", ["train.strategy='bogus'"], ["train.strategy", "'bogus'", "ddp", "fsdp"]),
    ("strategy-typo", ["train.strategy='dpp'"], ["train.strategy", "did you mean 'ddp'"]),
    ("seed-negative", ["train.seed=-1"], ["train.seed", "-1", "greater than or equal to 0"]),
    ("seed-too-big", [f"train.seed={2**32}"], ["train.seed", str(2**32), str(2**32 - 1)]),
    ("paths-empty", ["data.paths=['']"], ["data.paths.0", "empty or blank path"]),
    ("paths-blank", ["data.paths=['corpus.txt', '  ']"], ["data.paths.1", "'  '"]),
]


class TrainingStarted(Exception):
    """Raised by a stand-in for the training stage: the spec was not refused in time."""


@pytest.fixture
def no_training(monkeypatch):
    """``corekit train`` fails at once if it gets past the spec (instead of training for minutes)."""
    import corekit.train.fit

    def started(*args, **kwargs):
        raise TrainingStarted("corekit train went on to train a spec it should have refused")

    monkeypatch.setattr(corekit.train.fit, "train", started)


@pytest.mark.parametrize(("change", "needles"), [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses_before_writing(tmp_path, capsys, monkeypatch, no_training, change, needles):
    """``corekit train`` stops at the spec: before any tokenizer training or any file written."""
    spec = tiny(tmp_path, change if isinstance(change, str) else "")
    overrides = [] if isinstance(change, str) else [a for item in change for a in ("--set", item)]
    before = tree(tmp_path)
    run_dir = tmp_path / "run"
    code, out, err = cli(capsys, monkeypatch, "train", spec, "--run-dir", run_dir, *overrides)
    assert_refused(code, out, err, *needles)
    assert not run_dir.exists()
    assert tree(tmp_path) == before
    assert not (Path.cwd() / "runs").exists()


def test_an_existing_run_is_left_byte_identical(tmp_path, capsys, monkeypatch, no_training):
    spec = tiny(tmp_path)
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "spec.toml").write_text("# an earlier run\n")
    (run_dir / "data" / "manifest.json").write_text("{}\n")
    before = tree(tmp_path)
    code, out, err = cli(capsys, monkeypatch, "train", spec, "--run-dir", run_dir, "--set", "train.seed=-1")
    assert_refused(code, out, err, "train.seed")
    assert tree(tmp_path) == before


# (id, overrides): the valid values next to the refused ones
VALID_CASES = [
    ("export-known-keys", ["export.quantize='none'", "export.opset=18"]),
    ("adamw-betas-edges", ["train.optimizer.betas=[0.0, 0.9999]"]),
    ("lion-betas", ["train.optimizer.name='lion'", "train.optimizer.betas=[0.0, 0.999]"]),
    ("sgd-momentum-edges",
     ["train.optimizer.name='sgd'", "train.optimizer.momentum=0.0", "train.optimizer.dampening=1.0"]),
    ("sgd-nesterov", ["train.optimizer.name='sgd'", "train.optimizer.nesterov=true", "train.optimizer.momentum=0.5"]),
    ("devices-one", ["train.devices=1"]),
    ("devices-auto", ["train.devices='auto'"]),
    ("strategy-auto", ["train.strategy='auto'"]),
    ("strategy-ddp", ["train.strategy='ddp'"]),
    ("strategy-fsdp", ["train.strategy='fsdp'"]),
    ("seed-zero", ["train.seed=0"]),
    ("seed-max", [f"train.seed={2**32 - 1}"]),
    ("paths-with-spaces", ["data.paths=[' corpus.txt ']"]),
]


@pytest.mark.parametrize("overrides", [c[1] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES])
def test_boundary_values_still_validate(tmp_path, capsys, monkeypatch, overrides):
    spec = tiny(tmp_path)
    code, out, err = cli(capsys, monkeypatch, "spec", "validate", spec, *[a for o in overrides for a in ("--set", o)])
    assert code == 0, err
    assert "valid (" in out


def test_export_section_with_every_field_validates(registry):
    from corekit.spec import load_spec

    data = {"model": {"attention": {"name": "mha", "n_heads": 4}},
            "export": {"format": "onnx", "quantize": "int8", "opset": 20}}
    assert load_spec(data, registry=registry).export.opset == 20


# --------------------------------------------------------------------------- strategies and seeds
def test_strategy_names_match_lightnings_registry():
    """The static list in corekit.spec (kept so that loading a spec does not import Lightning)
    is exactly what the installed Lightning registers."""
    from lightning.pytorch.strategies import StrategyRegistry

    from corekit.train.spec import LIGHTNING_STRATEGIES, STRATEGIES

    assert sorted(LIGHTNING_STRATEGIES) == sorted(StrategyRegistry.available_strategies())
    assert "auto" in STRATEGIES and "auto" not in LIGHTNING_STRATEGIES


def test_seed_bounds_are_numpys():
    import numpy as np

    from corekit.train.spec import MAX_SEED

    np.random.seed(MAX_SEED)
    np.random.seed(0)
    with pytest.raises(ValueError):
        np.random.seed(MAX_SEED + 1)
    with pytest.raises(ValueError):
        np.random.seed(-1)


# --------------------------------------------------------------------------- nesting depth
def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("levels", [500, 3000])
def test_a_deeply_nested_file_is_refused(tmp_path, capsys, monkeypatch, levels):
    """500 levels made tomllib recurse past the limit; 3000 made the validator do so."""
    spec = tiny(tmp_path, "")
    text = spec.read_text(encoding="utf-8").replace("[model]\n", f"[model]\nx = {deep(levels)}\n", 1)
    spec.write_text(text, encoding="utf-8")
    code, out, err = cli(capsys, monkeypatch, "spec", "validate", spec)
    assert_refused(code, out, err, str(spec), "nested too deeply", "at most 64 levels")


def test_a_deeply_nested_json_file_is_refused(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "spec.json"
    spec.write_text('{"model": {"x": ' + deep(200) + "}}", encoding="utf-8")
    code, out, err = cli(capsys, monkeypatch, "spec", "validate", spec)
    assert_refused(code, out, err, str(spec), "nested too deeply")


@pytest.mark.parametrize("levels", [100, 500])
def test_a_deeply_nested_set_is_refused(tmp_path, capsys, monkeypatch, no_training, levels):
    spec = tiny(tmp_path)
    run_dir = tmp_path / "run"
    code, out, err = cli(capsys, monkeypatch, "train", spec, "--run-dir", run_dir, "--set", f"model.x={deep(levels)}")
    assert_refused(code, out, err, "--set", "'model.x=[[[", "nested too deeply")
    assert not run_dir.exists()


def test_nesting_up_to_the_limit_is_left_to_validation(tmp_path, capsys, monkeypatch):
    """At 64 levels in all the depth check lets the spec through (and the unknown field is named)."""
    from corekit.spec import MAX_SPEC_DEPTH, nesting_depth

    value = deep(MAX_SPEC_DEPTH - 2)  # inside [model] inside the spec
    assert nesting_depth({"model": {"x": eval(value)}}) == MAX_SPEC_DEPTH  # noqa: S307 - nested empty lists
    code, out, err = cli(capsys, monkeypatch, "spec", "validate", tiny(tmp_path), "--set", f"model.x={value}")
    assert_refused(code, out, err, "model.x", "unknown field 'x'")
    assert "nested too deeply" not in err


def test_a_deeply_nested_dict_is_refused_by_load_spec(registry):
    from corekit.errors import SpecError
    from corekit.spec import load_spec

    node: list = []
    data = {"model": {"attention": {"name": "mha", "n_heads": 4}, "x": node}}
    for _ in range(2000):
        node.append([])
        node = node[0]
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(data, registry=registry)


def test_nesting_depth_counts_tables_and_arrays():
    from corekit.spec import nesting_depth

    assert nesting_depth(3) == 0
    assert nesting_depth({}) == 1
    assert nesting_depth({"a": [1, {"b": []}]}) == 4
    assert nesting_depth([[], [[[]]]]) == 4


# --------------------------------------------------------------------------- spec show on huge models
def test_show_names_a_width_torch_cannot_describe(tmp_path, capsys, monkeypatch):
    code, out, err = cli(capsys, monkeypatch, "spec", "show", tiny(tmp_path), "--set", f"model.d_model={10**12}")
    assert_refused(code, out, err, "model.d_model", str(10**12), "2**63 bytes")
    assert "parameters" not in out


def test_show_counts_a_trillion_layers_at_once(registry, tmp_path, capsys, monkeypatch):
    from corekit.spec import load_spec
    from corekit.stats import model_size

    spec_file = tiny(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")

    def too_slow(signum, frame):
        raise TimeoutError("spec show is building the layers one by one")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(60)  # building 10**12 blocks would never end
    try:
        code, out, err = cli(capsys, monkeypatch, "spec", "show", spec_file, "--set", f"model.n_layers={10**12}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 0, err
    two = model_size(load_spec(spec_file, ["model.n_layers=2"], registry).model, registry)
    three = model_size(load_spec(spec_file, ["model.n_layers=3"], registry).model, registry)
    per_block = three.parameters - two.parameters
    expected = two.parameters + (10**12 - 2) * per_block
    assert f"{expected:,}" in out


LAYOUTS = [
    {"layout": "pre", "tie_embeddings": True},
    {"layout": "pre", "tie_embeddings": False},
    {"layout": "post", "tie_embeddings": True},
    {"layout": "post", "tie_embeddings": False, "bias": True},
    {"layout": "parallel", "tie_embeddings": True},
    {"layout": "parallel", "tie_embeddings": False, "n_layers": 5},
    {"n_layers": 1},
]


def _full_counts(model_spec, registry):
    import torch

    from corekit.assemble import build_model
    from corekit.stats import count_parameters, flops_per_token

    with torch.device("meta"):
        model = build_model(model_spec, registry)
    return count_parameters(model), model.tok_emb.weight.numel(), flops_per_token(model, model_spec)


@pytest.mark.parametrize("overrides", LAYOUTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_fast_count_matches_a_full_build(registry, overrides):
    from corekit.spec import load_spec
    from corekit.stats import model_size

    model = {"context_length": 64, "d_model": 48, "n_layers": 3, "vocab_size": 300,
             "attention": {"name": "gqa", "n_heads": 4, "n_kv_heads": 2}, **overrides}
    spec = load_spec({"model": model}, registry=registry).model
    size = model_size(spec, registry)
    assert (size.parameters, size.embedding, size.flops_per_token) == _full_counts(spec, registry)


@pytest.mark.parametrize("name", ["tiny", "llama-style", "gpt2-small"])
def test_fast_count_matches_a_full_build_for_the_examples(registry, name):
    from corekit.spec import load_spec
    from corekit.stats import model_size

    spec = load_spec(EXAMPLES / f"{name}.toml", registry=registry).model
    if spec.vocab_size is None:  # a tokenizer trained later: any size will do
        spec = spec.model_copy(update={"vocab_size": 1000})
    size = model_size(spec, registry)
    assert (size.parameters, size.embedding, size.flops_per_token) == _full_counts(spec, registry)


# --------------------------------------------------------------------------- plugin builds
EXPLODING_PLUGIN = '''
from typing import Literal

from corekit import hookimpl
from corekit.params import Params


class ExplodeParams(Params):
    """A norm whose build always fails."""

    name: Literal["explode"] = "explode"


def build(params, ctx):
    raise ValueError(f"cannot normalise width {ctx.d_model}: boom")


@hookimpl
def corekit_register_components(registry):
    registry.add("norm", ExplodeParams, build)
'''


@pytest.fixture
def exploding_plugin(tmp_path, monkeypatch) -> str:
    """An installed (entry-point) plugin package ``fake-explode`` 1.0 with a norm that cannot build."""
    site, module = tmp_path / "site", "corekit_test_explode_plugin"
    dist = site / "fake_explode-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-explode\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[corekit]\n{module} = {module}\n")
    (site / f"{module}.py").write_text(EXPLODING_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(AUTOLOAD_ENV, "0")
    importlib.invalidate_caches()
    yield module
    sys.modules.pop(module, None)


def test_a_plugin_build_error_is_reported_not_a_traceback(exploding_plugin, tmp_path, capsys, monkeypatch):
    code, out, err = cli(capsys, monkeypatch, "spec", "show", tiny(tmp_path), "--set", "model.norm='explode'")
    assert_refused(code, out, err, "norm 'explode'", "fake-explode 1.0", exploding_plugin, "ValueError",
                   "cannot normalise width 128: boom")
    assert len(err.strip().splitlines()) == 1  # one paragraph


def test_a_plugin_build_error_chains_the_original(exploding_plugin):
    from corekit.errors import PluginBuildError, PluginError
    from corekit.params import ModelContext
    from corekit.plugins import load_registry

    reg = load_registry(autoload=True)
    ctx = ModelContext(d_model=8, n_layers=1, n_heads=2, n_kv_heads=2, context_length=4, vocab_size=10,
                       bias=False, dropout=0.0, layout="pre")
    with pytest.raises(PluginBuildError) as info:
        reg.build("norm", "explode", ctx)
    assert isinstance(info.value, PluginError)
    assert isinstance(info.value.__cause__, ValueError) and "boom" in str(info.value.__cause__)
    assert reg.build("norm", "rmsnorm", ctx) is not None  # other components still build


# --------------------------------------------------------------------------- help texts
@pytest.mark.parametrize(("command", "sections"), [
    (["run", "--help"], ["[export]", "[compress]"]),
    (["finetune", "--help"], ["[finetune]"]),
])
def test_help_keeps_spec_section_names(capsys, monkeypatch, command, sections):
    monkeypatch.setenv("COLUMNS", "300")
    code, out, err = cli(capsys, monkeypatch, *command)
    assert code == 0, err
    text = " ".join(out.split())  # help text wraps at any width
    for section in sections:
        assert section in text, text
