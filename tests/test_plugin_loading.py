"""Plugin loading end to end: a third-party package through the entry-point group, broken
plugins, conflicts, a user's ``registry.toml`` and the cost of discovery.

The example package (``examples/third_party_plugin``) is pip-installed into a temporary
``--target`` directory, never into the global site-packages; entry points are enabled
only for the processes (or the ``load_registry`` calls) that ask for them.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest

from corekit import hookimpl
from corekit.errors import PluginConflictError, PluginError, SpecError
from corekit.params import ModelContext, Params
from corekit.plugins import AUTOLOAD_ENV, REGISTRY_ENV, PluginLoadWarning, load_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "third_party_plugin"
EXAMPLE_SPEC = EXAMPLE / "spec.toml"
BUILTIN_NORMS = {("norm", "layernorm"), ("norm", "rmsnorm")}

# Run the installed console script (what users run), preferring the one beside this interpreter,
# since a pyenv shim on PATH costs extra start-up.
CLI = shutil.which("corekit", path=str(Path(sys.executable).parent)) or shutil.which("corekit")


def ctx(d_model: int = 8) -> ModelContext:
    return ModelContext(
        d_model=d_model, n_layers=1, n_heads=2, n_kv_heads=2, context_length=16,
        vocab_size=None, bias=False, dropout=0.0, layout="pre",
    )


def plugin_env(*pythonpath: Path, autoload: bool = True, **extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: ``pythonpath`` first, entry points on or off."""
    env = dict(os.environ)
    env.pop(AUTOLOAD_ENV, None)
    env.pop(REGISTRY_ENV, None)
    if not autoload:
        env[AUTOLOAD_ENV] = "1"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    assert CLI is not None, "the corekit console script is not installed"
    return subprocess.run(
        [CLI, *args], env=env, cwd=cwd or Path.cwd(), capture_output=True, text=True, timeout=timeout
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, one paragraph on stderr that contains every needle, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert err.startswith("error:"), err
    assert "\n\n" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def forget_modules(*prefixes: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]


# --------------------------------------------------------------------------- the example package
@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """``examples/third_party_plugin`` pip-installed into a temporary ``--target`` directory.

    The sources are copied first: setuptools builds in the source tree and would leave
    ``build/`` and ``*.egg-info`` in the repository.
    """
    root = tmp_path_factory.mktemp("example_plugin")
    src, site = root / "src", root / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "corekit_example_plugin" / "__init__.py").is_file()
    assert list(site.glob("corekit_example_plugin-0.1.0.dist-info"))
    return site


@pytest.fixture
def example_on_path(example_site, monkeypatch):
    """The example package importable (and its entry point visible) in this process."""
    monkeypatch.syspath_prepend(str(example_site))
    importlib.invalidate_caches()
    yield example_site
    forget_modules("corekit_example_plugin")
    importlib.invalidate_caches()


@pytest.mark.slow
def test_example_listed_by_cli(example_site):
    proc = run_cli("plugins", "--json", env=plugin_env(example_site))
    assert proc.returncode == 0, proc.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)}
    for key in [("norm", "scalenorm"), ("activation", "squared_relu"), ("feedforward", "moe")]:
        assert key in rows, sorted(rows)
        assert rows[key]["package"] == "corekit-example-plugin"
        assert rows[key]["version"] == "0.1.0"
        assert rows[key]["module"] == "corekit_example_plugin"
    assert rows[("norm", "scalenorm")]["description"].startswith("ScaleNorm")
    assert rows[("norm", "rmsnorm")]["package"] == "corekit"  # the built-ins are still there

    # with autoload off, the installed package is not picked up
    proc = run_cli("plugins", "--json", env=plugin_env(example_site, autoload=False))
    assert proc.returncode == 0, proc.stderr
    assert not {r["name"] for r in json.loads(proc.stdout)} & {"scalenorm", "squared_relu"}


@pytest.mark.slow
def test_example_spec_generates(example_site):
    proc = run_cli(
        "generate", str(EXAMPLE_SPEC), "--prompt", "hi", "-n", "5", "--temperature", "0",
        env=plugin_env(example_site),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("hi")
    assert "Traceback" not in proc.stderr

    # without the plugin, the same spec is refused with a readable error naming the norm
    proc = run_cli("spec", "validate", str(EXAMPLE_SPEC), env=plugin_env(example_site, autoload=False))
    assert_clean_error(proc, "scalenorm")


@pytest.mark.slow
def test_example_in_spec_schema(example_site):
    proc = run_cli("spec", "schema", env=plugin_env(example_site))
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    scalenorm = schema["$defs"]["ScaleNormParams"]
    assert scalenorm["properties"]["name"]["const"] == "scalenorm"
    assert scalenorm["properties"]["eps"]["default"] == 1e-5
    assert scalenorm["additionalProperties"] is False
    assert "SquaredReLUParams" in schema["$defs"]
    model = json.dumps(schema["$defs"]["ModelSpec"]["properties"]["norm"])
    assert "#/$defs/ScaleNormParams" in model


@pytest.mark.slow
def test_example_loads_in_process(example_on_path):
    reg = load_registry(autoload=True)
    for kind, name in [("norm", "scalenorm"), ("activation", "squared_relu")]:
        comp = reg.get(kind, name)
        assert (comp.source.package, comp.source.version) == ("corekit-example-plugin", "0.1.0")
    assert BUILTIN_NORMS <= {(c.kind, c.name) for c in reg.components()}
    assert reg.get("activation", "squared_relu").params.gated is False

    off = load_registry(autoload=False)
    assert ("norm", "scalenorm") not in off


@pytest.mark.slow
def test_moe_feedforward_matches_a_hand_computation(example_on_path):
    """The example's mixture of experts: each token's output is the softmax-of-top-k-logits
    weighted sum of its chosen experts' MLPs, computed here token by token with F.linear."""
    import torch
    import torch.nn.functional as F

    reg = load_registry(autoload=True)
    from corekit.spec import ModelSpec

    model = reg.resolve(ModelSpec).model_validate({
        "d_model": 8, "n_layers": 1, "attention": {"n_heads": 2},
        "mlp": {"name": "moe", "n_experts": 3, "top_k": 2, "activation": "relu", "hidden_dim": 6}})
    params = model.mlp
    assert reg.get("feedforward", "moe").source.package == "corekit-example-plugin"
    torch.manual_seed(0)
    moe = reg.build("feedforward", params, ctx(8), reg.build("activation", params.activation, ctx(8)))
    x = torch.randn(2, 5, 8)
    got = moe(x)
    for b in range(2):
        for t in range(5):
            token = x[b, t]
            logits = F.linear(token, moe.router.weight)
            chosen = sorted(range(3), key=lambda e: -logits[e].item())[:2]
            weights = torch.softmax(logits[chosen], dim=0)
            want = sum(w * F.linear(F.relu(F.linear(token, moe.up[e].weight)), moe.down[e].weight)
                       for w, e in zip(weights, chosen))
            torch.testing.assert_close(got[b, t], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(SpecError, match="top_k=4 is more than n_experts=3"):
        from corekit.spec import load_spec

        load_spec({"model": {"attention": {"n_heads": 4}, "mlp": {"name": "moe", "n_experts": 3, "top_k": 4}}},
                  registry=reg)


@pytest.mark.slow
def test_example_stage_and_command_work_through_corekit_run(example_site, tmp_path):
    """The example package's stage (with its [experts] section), feed-forward block and command:
    `corekit run` trains the mixture of experts and runs the stage after the built-in ones; a
    second run skips it as current; `corekit experts` shows the same figures."""
    corpus = tmp_path / "corpus"
    for i in range(20):
        write(corpus / f"{i}.txt", " ".join(f"line {i}.{j}: the quick brown fox jumps" for j in range(20)))
    run = tmp_path / "run"
    args = ["run", str(EXAMPLE_SPEC), "--run-dir", str(run), "-j", "1", "--set", "train.max_steps=3",
            "--set", "train.batch_size=2", "--set", f'data.paths=["{corpus}"]', "--set", "data.min_chars=1",
            "--set", "experts.windows=4"]
    proc = run_cli(*args, env=plugin_env(example_site), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"blocks.0.mlp.router.weight", "blocks.0.mlp.up.3.weight", "blocks.1.mlp.down.0.weight"} <= keys
    report = json.loads((run / "experts.json").read_text())
    assert report["windows"] == 4 and len(report["layers"]) == 2
    for shares in report["layers"].values():
        assert len(shares) == 4 and math.isclose(sum(shares), 1.0, rel_tol=1e-5) and min(shares) >= 0
    stderr = " ".join(proc.stderr.split())
    assert stderr.index("train") < stderr.index("experts ->")  # the plugin's stage ran after training
    assert "expert 3" in proc.stdout

    again = run_cli(*args, env=plugin_env(example_site), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "experts.json is current; skipped" in " ".join(again.stderr.split())

    shown = run_cli("experts", str(run), "--windows", "4", env=plugin_env(example_site))
    assert shown.returncode == 0, shown.stderr
    first_layer = next(iter(report["layers"].values()))
    assert f"{first_layer[0]:.1%}" in shown.stdout

    schema = json.loads(run_cli("spec", "schema", env=plugin_env(example_site)).stdout)
    assert schema["$defs"]["ExpertsSpec"]["additionalProperties"] is False
    rows = json.loads(run_cli("plugins", "--json", "--kind", "stage", env=plugin_env(example_site)).stdout)
    assert ("experts", "corekit-example-plugin") in {(r["name"], r["package"]) for r in rows}
    bad = run_cli("spec", "validate", str(EXAMPLE_SPEC), "--set", "experts.window=3", env=plugin_env(example_site))
    assert_clean_error(bad, "experts.window", "windows")


@pytest.mark.slow
def test_scalenorm_matches_formula(example_on_path):
    import torch

    reg = load_registry(autoload=True)
    d, eps = 8, 1e-3
    norm = reg.build("norm", {"name": "scalenorm", "eps": eps}, ctx(d))
    assert [p.numel() for p in norm.parameters()] == [1]  # one learned scalar
    assert next(norm.parameters()).item() == pytest.approx(math.sqrt(d))

    torch.manual_seed(0)
    x = torch.randn(2, 3, d, dtype=torch.float64)
    x[0, 0] = 0.0  # the eps floor keeps an all-zero row finite
    x[1, 2] = 1e-5  # ||x|| = 1e-5 * sqrt(8) < eps: divided by eps, not by its norm

    def expected(g: float) -> torch.Tensor:
        l2 = torch.sqrt((x * x).sum(dim=-1, keepdim=True))
        return g * x / torch.maximum(l2, torch.tensor(eps, dtype=x.dtype))

    norm = norm.double()
    y = norm(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, expected(math.sqrt(d)))
    assert torch.all(y[0, 0] == 0)
    torch.testing.assert_close(y[1, 2], math.sqrt(d) * x[1, 2] / eps)
    with torch.no_grad():
        next(norm.parameters()).fill_(2.5)
    torch.testing.assert_close(norm(x), expected(2.5))
    norm(x).sum().backward()
    assert next(norm.parameters()).grad is not None


@pytest.mark.slow
def test_squared_relu_matches_torch(example_on_path):
    import torch

    reg = load_registry(autoload=True)
    act = reg.build("activation", "squared_relu", ctx())
    x = torch.linspace(-3, 3, 61).reshape(1, 61)
    torch.testing.assert_close(act(x), torch.relu(x) ** 2, rtol=0, atol=0)


@pytest.mark.slow
def test_example_spec_builds_its_components(example_on_path):
    from corekit.assemble import build_model
    from corekit.spec import load_spec

    reg = load_registry(autoload=True)
    spec = load_spec(EXAMPLE_SPEC, registry=reg)
    assert (spec.model.norm.name, spec.model.mlp.activation.name) == ("scalenorm", "squared_relu")
    assert (spec.model.context_length, spec.model.d_model, spec.model.n_layers) == (64, 64, 2)
    model = build_model(spec, reg)
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"ScaleNorm", "SquaredReLU"} <= kinds


# --------------------------------------------------------------------------- broken plugins
def fake_distribution(root: Path, name: str, module: str, body: str) -> Path:
    """A dist-info for ``name`` 1.0 whose ``corekit`` entry point is ``module`` (with ``body``)."""
    dist = root / f"{name.replace('-', '_')}-1.0.dist-info"
    write(dist / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    write(dist / "entry_points.txt", f"[corekit]\n{module} = {module}\n")
    write(root / f"{module}.py", body)
    return root


@pytest.fixture
def broken_site(tmp_path) -> Path:
    return fake_distribution(
        tmp_path / "broken_site", "fake-broken", "fake_broken_plugin",
        'raise RuntimeError("fake-broken cannot import: boom")\n',
    )


def test_broken_import_warns_and_skips(broken_site, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_site))
    importlib.invalidate_caches()
    with pytest.warns(PluginLoadWarning) as record:
        reg = load_registry(autoload=True)
    messages = [str(w.message) for w in record if issubclass(w.category, PluginLoadWarning)]
    assert any("fake-broken" in m and "RuntimeError" in m and "boom" in m for m in messages), messages
    assert BUILTIN_NORMS <= {(c.kind, c.name) for c in reg.components()}
    assert ("attention", "mha") in reg

    with pytest.raises(PluginError, match="fake-broken") as info:
        load_registry(autoload=True, strict=True)
    assert "boom" in str(info.value)


@pytest.mark.slow
def test_broken_import_cli(broken_site):
    proc = run_cli("plugins", "--json", env=plugin_env(broken_site))
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "fake-broken" in proc.stderr and "boom" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("norm", "rmsnorm") in {(r["kind"], r["name"]) for r in json.loads(proc.stdout)}

    assert_clean_error(run_cli("--strict", "plugins", env=plugin_env(broken_site)), "fake-broken", "boom")


HALFWAY = '''
from typing import Literal

from corekit import hookimpl
from corekit.params import ActivationParams, Params


class HalfNormParams(Params):
    """Registered, then rolled back."""

    name: Literal["halfway"] = "halfway"


class HalfActParams(ActivationParams):
    """Registered, then rolled back."""

    name: Literal["halfway_act"] = "halfway_act"


@hookimpl
def corekit_register_components(registry):
    registry.add("norm", HalfNormParams, lambda params, ctx: None)
    registry.add("activation", HalfActParams, lambda params, ctx: None)
    raise RuntimeError("register failed half-way")
'''

# claims the names the failing plugin added: a conflict if they were not rolled back
SAME_NAMES = HALFWAY.replace('    raise RuntimeError("register failed half-way")\n', "")


@pytest.mark.parametrize("road", ["entry point", "registry.toml"])
def test_register_failure_rolls_back(road, tmp_path, monkeypatch):
    if road == "entry point":
        site = fake_distribution(tmp_path / "site", "fake-halfway", "fake_halfway_plugin", HALFWAY)
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        kwargs = {"autoload": True}
        needle = "fake-halfway"
    else:
        write(tmp_path / "halfway.py", HALFWAY)
        write(tmp_path / "same_names.py", SAME_NAMES)
        reg_file = write(tmp_path / "registry.toml", 'modules = ["halfway.py", "same_names.py"]\n')
        kwargs = {"registry_file": reg_file, "autoload": False}
        needle = "halfway.py"

    with pytest.warns(PluginLoadWarning, match="register failed half-way") as record:
        reg = load_registry(**kwargs)
    assert any(needle in str(w.message) for w in record), [str(w.message) for w in record]
    if road == "entry point":
        assert ("norm", "halfway") not in reg and ("activation", "halfway_act") not in reg
        plugin_names = [reg.plugin_manager.get_name(p) for p in reg.plugin_manager.get_plugins()]
        assert not any("fake_halfway_plugin" in n for n in plugin_names), plugin_names
    else:  # rolled back, so the next plugin could take the same names
        assert reg.get("norm", "halfway").source.module == "same_names.py"
        assert reg.get("activation", "halfway_act").source.module == "same_names.py"
    assert BUILTIN_NORMS <= {(c.kind, c.name) for c in reg.components()}

    with pytest.raises(PluginError, match="register failed half-way"):
        load_registry(strict=True, **kwargs)


# --------------------------------------------------------------------------- conflicts
class MyRMSNormParams(Params):
    """A replacement rmsnorm."""

    name: Literal["rmsnorm"] = "rmsnorm"


def _sentinel_build(params, ctx):
    return ("replacement", ctx.d_model)


def rmsnorm_plugin(module_name: str, *, override: bool) -> ModuleType:
    module = ModuleType(module_name)

    @hookimpl
    def corekit_register_components(registry):
        registry.add("norm", MyRMSNormParams, _sentinel_build, override=override)

    module.corekit_register_components = corekit_register_components
    return module


def test_duplicate_name_is_an_error_naming_both():
    with pytest.raises(PluginConflictError) as info:
        load_registry(autoload=False, plugins=[rmsnorm_plugin("dup_rmsnorm_plugin", override=False)])
    msg = str(info.value)
    assert "norm:rmsnorm" in msg
    assert "corekit_plugins.norms" in msg and "dup_rmsnorm_plugin" in msg


def test_duplicate_from_local_module_is_an_error_even_when_not_strict(tmp_path):
    write(tmp_path / "dup.py", """
        from typing import Literal
        from corekit import hookimpl
        from corekit.params import Params

        class DupParams(Params):
            \"\"\"Clashes with the built-in.\"\"\"
            name: Literal["rmsnorm"] = "rmsnorm"

        @hookimpl
        def corekit_register_components(registry):
            registry.add("norm", DupParams, lambda params, ctx: None)
    """)
    reg_file = write(tmp_path / "registry.toml", 'modules = ["dup.py"]\n')
    with pytest.raises(PluginConflictError) as info:
        load_registry(reg_file, autoload=False)
    msg = str(info.value)
    assert "corekit_plugins.norms" in msg and "dup.py" in msg and str(reg_file) in msg


def test_override_replaces_explicitly():
    reg = load_registry(autoload=False, plugins=[rmsnorm_plugin("override_rmsnorm_plugin", override=True)])
    comp = reg.get("norm", "rmsnorm")
    assert comp.params is MyRMSNormParams
    assert comp.source.module == "override_rmsnorm_plugin"
    assert reg.build("norm", "rmsnorm", ctx(16)) == ("replacement", 16)
    assert reg.get("norm", "layernorm").source.module == "corekit_plugins.norms"
    assert reg.names("norm").count("rmsnorm") == 1


# --------------------------------------------------------------------------- a user registry.toml
EXTRA_NORM = '''
"""A local plugin module, loaded from a user registry.toml by path."""
from typing import Literal

from corekit import hookimpl
from corekit.params import Params


class UnitNormParams(Params):
    """Local: divide by the L2 norm."""

    name: Literal["unitnorm"] = "unitnorm"


@hookimpl
def corekit_register_components(registry):
    registry.add("norm", UnitNormParams, lambda params, ctx: ("unitnorm", ctx.d_model))
'''

USER_REGISTRY = 'modules = ["local/extra_norm.py"]\ndisable = ["attention:mqa"]\n'


@pytest.mark.parametrize("how", ["argument", "env", "cwd"])
def test_user_registry_adds_and_disables(how, tmp_path, monkeypatch):
    # outside the cwd (except for ./registry.toml): .py paths resolve from the file
    folder = Path.cwd() if how == "cwd" else tmp_path / "conf"
    reg_file = write(folder / "registry.toml", USER_REGISTRY)
    write(folder / "local" / "extra_norm.py", EXTRA_NORM)
    if how == "env":
        monkeypatch.setenv(REGISTRY_ENV, str(reg_file))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        reg = load_registry(reg_file if how == "argument" else None, autoload=False)

    comp = reg.get("norm", "unitnorm")
    assert comp.source.user and comp.source.module == "local/extra_norm.py"
    assert str(reg_file) in comp.source.package
    assert reg.build("norm", "unitnorm", ctx(12)) == ("unitnorm", 12)
    assert ("attention", "mqa") not in reg
    assert {("attention", "mha"), ("attention", "gqa")} <= {(c.kind, c.name) for c in reg.components()}
    spec = {"model": {"d_model": 32, "attention": {"name": "mqa", "n_heads": 4}}}
    with pytest.raises(SpecError, match="mqa"):
        from corekit.spec import load_spec

        load_spec(spec, registry=reg)


def test_without_user_registry_mqa_is_there():
    assert ("attention", "mqa") in load_registry(autoload=False)


def test_user_registry_dotted_module(tmp_path, monkeypatch):
    write(tmp_path / "pkg" / "corekit_test_dotted_plugin.py", EXTRA_NORM)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    reg_file = write(tmp_path / "registry.toml", 'modules = ["corekit_test_dotted_plugin"]\n')
    try:
        reg = load_registry(reg_file, autoload=False)
    finally:
        forget_modules("corekit_test_dotted_plugin")
    assert reg.get("norm", "unitnorm").source.module == "corekit_test_dotted_plugin"


def test_disable_matching_nothing_warns(tmp_path):
    reg_file = write(tmp_path / "registry.toml", 'disable = ["norm:nosuchnorm", "attention:mqa"]\n')
    with pytest.warns(PluginLoadWarning) as record:
        reg = load_registry(reg_file, autoload=False)
    messages = [str(w.message) for w in record if issubclass(w.category, PluginLoadWarning)]
    assert len(messages) == 1, messages  # attention:mqa matched, so only one warning
    assert "norm:nosuchnorm" in messages[0] and str(reg_file) in messages[0]
    assert ("attention", "mqa") not in reg


def test_missing_local_module_warns_or_fails_when_strict(tmp_path):
    reg_file = write(tmp_path / "registry.toml", 'modules = ["nowhere.py"]\n')
    with pytest.warns(PluginLoadWarning, match="nowhere.py"):
        reg = load_registry(reg_file, autoload=False)
    assert BUILTIN_NORMS <= {(c.kind, c.name) for c in reg.components()}
    with pytest.raises(PluginError, match="nowhere.py"):
        load_registry(reg_file, autoload=False, strict=True)


MALFORMED = {
    "bad toml": "modules = [\n",
    "unknown key": 'module = ["x.py"]\n',
    "disable without kind": 'disable = ["mqa"]\n',
    "disable unknown kind": 'disable = ["nokind:mqa"]\n',
    "disable not a list": 'disable = "attention:mqa"\n',
    "modules not strings": "modules = [1]\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_user_registry(case, tmp_path):
    reg_file = write(tmp_path / "registry.toml", MALFORMED[case])
    with pytest.raises(PluginError) as info:
        load_registry(reg_file, autoload=False)
    assert str(reg_file) in str(info.value)


def test_missing_user_registry(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        load_registry(tmp_path / "nope.toml", autoload=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, how", [("bad toml", "option"), ("unknown key", "cwd"), ("disable without kind", "env")]
)
def test_malformed_user_registry_cli(case, how, tmp_path):
    folder = tmp_path / "work"
    reg_file = write(folder / "registry.toml", MALFORMED[case])
    args: list[str] = ["plugins"]
    extra = {}
    if how == "option":
        args = ["--registry", str(reg_file), *args]
    elif how == "env":
        extra[REGISTRY_ENV] = str(reg_file)
    proc = run_cli(*args, env=plugin_env(autoload=False, **extra), cwd=folder)
    assert_clean_error(proc, "registry.toml")


def test_local_module_replaces_builtin(tmp_path):
    write(tmp_path / "my_rmsnorm.py", '''
        from typing import Literal
        from corekit import hookimpl
        from corekit.params import Params

        class LocalRMSNormParams(Params):
            """My own rmsnorm."""
            name: Literal["rmsnorm"] = "rmsnorm"
            flavour: str = "local"

        @hookimpl
        def corekit_register_components(registry):
            registry.add("norm", LocalRMSNormParams, lambda params, ctx: ("local rmsnorm", params.flavour))
    ''')
    reg_file = write(tmp_path / "registry.toml", 'modules = ["my_rmsnorm.py"]\ndisable = ["norm:rmsnorm"]\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)  # the disable entry did match
        reg = load_registry(reg_file, autoload=False)
    comp = reg.get("norm", "rmsnorm")
    assert comp.source.user and comp.source.module == "my_rmsnorm.py"
    assert comp.params.__name__ == "LocalRMSNormParams"
    assert reg.build("norm", "rmsnorm", ctx()) == ("local rmsnorm", "local")
    assert reg.get("norm", "layernorm").source.package == "corekit"

    from corekit.spec import load_spec

    spec = load_spec({"model": {"attention": {"n_heads": 4}, "norm": {"name": "rmsnorm", "flavour": "x"}}},
                     registry=reg)
    assert type(spec.model.norm).__name__ == "LocalRMSNormParams" and spec.model.norm.flavour == "x"


# --------------------------------------------------------------------------- discovery is cheap
LAZY_PROBE = """
import json, sys
from corekit.plugins import load_registry
reg = load_registry()
names = [f"{c.kind}:{c.name}" for c in reg.components()]
from corekit.cli.main import main
try:
    main(["plugins"])
    main(["plugins", "--json"])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
heavy = [m for m in ("torch", "lightning", "pytorch_lightning", "onnx", "onnxruntime") if m in sys.modules]
print("PROBE " + json.dumps({"heavy": heavy, "names": names}))
"""


@pytest.mark.parametrize("with_example", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_discovery_does_not_import_torch(with_example, request):
    paths = [request.getfixturevalue("example_site")] if with_example else []
    proc = subprocess.run(
        [sys.executable, "-c", LAZY_PROBE], env=plugin_env(*paths, autoload=with_example),
        cwd=Path.cwd(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("PROBE "))
    assert probe["heavy"] == []
    assert "norm:rmsnorm" in probe["names"]
    assert ("norm:scalenorm" in probe["names"]) is with_example


def test_cli_plugins_wall_time(capsys):
    start = time.perf_counter()
    proc = run_cli("plugins", env=plugin_env(autoload=False))
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "rmsnorm" in proc.stdout and "components" in proc.stdout
    with capsys.disabled():
        print(f"\n`corekit plugins` wall time: {elapsed:.2f} s (timing bounds live in benchmarks/)")


# --------------------------------------------------------------------------- review regressions
MISBEHAVING = {
    "markup": ('raise RuntimeError("bad [/bold] markup [red]here")\n', "[/bold] markup [red]here"),
    "exit": ("import sys\nsys.exit(3)\n", "SystemExit"),
    "typo": (
        "from corekit import hookimpl\n\n@hookimpl\ndef corekit_register_componentz(registry):\n    pass\n",
        "corekit_register_componentz",
    ),
    "extra-allow": (
        "from typing import Literal\nfrom pydantic import ConfigDict\nfrom corekit import hookimpl\n"
        "from corekit.params import Params\n\n"
        "class LooseParams(Params):\n    model_config = ConfigDict(extra='allow')\n"
        "    name: Literal['loose'] = 'loose'\n\n"
        "@hookimpl\ndef corekit_register_components(registry):\n"
        "    registry.add('norm', LooseParams, lambda p, c: None)\n",
        "extra='forbid'",
    ),
}


@pytest.mark.parametrize("case", sorted(MISBEHAVING))
def test_misbehaving_plugin_is_reported_and_skipped(case, tmp_path, monkeypatch):
    body, needle = MISBEHAVING[case]
    site = fake_distribution(tmp_path / "site", f"fake-{case}", f"fake_{case.replace('-', '_')}_plugin", body)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    with pytest.warns(PluginLoadWarning) as record:
        reg = load_registry(autoload=True)
    messages = [str(w.message) for w in record if issubclass(w.category, PluginLoadWarning)]
    assert any(f"fake-{case}" in m and needle in m for m in messages), messages
    assert ("norm", "rmsnorm") in reg and ("norm", "loose") not in reg
    with pytest.raises(PluginError, match=f"fake-{case}"):
        load_registry(autoload=True, strict=True)


@pytest.mark.slow
def test_markup_in_a_plugin_error_prints_verbatim(tmp_path):
    body, needle = MISBEHAVING["markup"]
    site = fake_distribution(tmp_path / "site", "fake-markup", "fake_markup_plugin", body)
    proc = run_cli("plugins", "--json", env=plugin_env(site))
    assert proc.returncode == 0, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- [defaults]
def test_builtin_defaults_come_from_the_manifest():
    from corekit.plugins import builtin_manifest

    reg = load_registry(autoload=False)
    assert reg.defaults == builtin_manifest().defaults
    assert reg.defaults["attention_kernel"] == "flash" and reg.defaults["norm"] == "layernorm"


def test_user_registry_changes_defaults(tmp_path):
    from corekit.spec import load_spec

    user = write(tmp_path / "registry.toml", '[defaults]\nnorm = "rmsnorm"\nattention_kernel = "math"\n')
    reg = load_registry(user, autoload=False)
    spec = load_spec({"model": {"attention": {"n_heads": 4}}}, registry=reg)
    assert spec.model.norm.name == "rmsnorm"
    assert spec.model.attention.kernel.name == "math"


def test_disabled_default_warns_and_the_field_becomes_required(tmp_path):
    from corekit.errors import SpecError
    from corekit.spec import load_spec

    user = write(tmp_path / "registry.toml", 'disable = ["attention_kernel:flash"]\n')
    with pytest.warns(PluginLoadWarning, match="default attention_kernel 'flash'"):
        reg = load_registry(user, autoload=False)
    with pytest.raises(SpecError) as info:
        load_spec({"model": {"attention": {"n_heads": 4}}}, registry=reg)
    assert [i.path for i in info.value.issues] == ["model.attention.kernel"]
    spec = load_spec({"model": {"attention": {"n_heads": 4, "kernel": "math"}}}, registry=reg)
    assert spec.model.attention.kernel.name == "math"


@pytest.mark.parametrize("text", ['[defaults]\nnorms = "rmsnorm"\n', "[defaults]\nnorm = 3\n", 'defaults = "x"\n'])
def test_malformed_defaults(tmp_path, text):
    user = write(tmp_path / "registry.toml", text)
    with pytest.raises(PluginError, match="defaults"):
        load_registry(user, autoload=False)
