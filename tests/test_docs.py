"""The documentation keeps its promises.

- Every plugin example in ``docs/plugins.md`` (a ``python`` block with a ``@corekit.hookimpl``)
  runs as a module, registers through :func:`corekit.plugins.load_registry`, and each component
  it registers builds with the arguments corekit gives its kind and works: model parts in a
  whole model (causal, and the KV cache matches the full forward), optimizers step, schedules
  step, tokenizers round-trip, compressors compress a run, templates render, adapters apply,
  merge and switch off, stages own a spec section that validates and run (then are current)
  in ``corekit run``'s loop; commands added by ``corekit_register_commands`` run on the
  command line.
- ``README.md`` stays a short entry point holding the two commands verbatim, with no history.
- Every relative link in ``README.md`` and ``docs/*.md`` points to a file that exists.
"""

from __future__ import annotations

import json
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from corekit.plugins import AUTOLOAD_ENV, load_registry
from corekit.registry import KINDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLUGINS_DOC = ROOT / "docs" / "plugins.md"
MAIN_JOB = "bash scripts/setup.sh && bash scripts/demo.sh"
TESTS = "bash scripts/setup.sh && python3 -m pytest -q"


# --------------------------------------------------------------------------- the examples
@dataclass(frozen=True)
class Block:
    """A fenced ``python`` block of a Markdown file; ``line`` is the line of its first code line."""

    path: Path
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """Every fenced ```python block of ``path``, in order."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            blocks.append(Block(path, start + 1, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return blocks


PLUGIN_BLOCKS = [b for b in python_blocks(PLUGINS_DOC) if "@corekit.hookimpl" in b.code]


def load_block(block: Block, monkeypatch) -> tuple[object, types.ModuleType, list]:
    """Run ``block`` as a module (tracebacks point at the docs' lines) and register it alone with
    the built-ins; returns ``(registry, module, the components it registered)``."""
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    name = f"corekit_docs_example_line{block.line}"
    module = types.ModuleType(name)
    module.__file__ = str(block.path)
    monkeypatch.setitem(sys.modules, name, module)  # pydantic and dataclasses look classes' modules up
    code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec")
    exec(code, module.__dict__)
    registry = load_registry(autoload=False, plugins=[module])
    components = [c for c in registry.components() if c.source.module == name]
    return registry, module, components


def test_the_plugin_guide_has_an_example_of_every_kind(monkeypatch):
    kinds = set()
    for block in PLUGIN_BLOCKS:
        kinds |= {c.kind for c in load_block(block, monkeypatch)[2]}
    assert kinds == set(KINDS), f"no example for {sorted(set(KINDS) - kinds)}"


def test_the_kinds_table_of_the_plugin_guide_is_current():
    from corekit.kinds import kinds_markdown

    assert kinds_markdown() in PLUGINS_DOC.read_text(encoding="utf-8"), (
        "docs/plugins.md must embed corekit.kinds.kinds_markdown() as it is now"
    )


# --------------------------------------------------------------------------- checks per kind
#: fields a kind's Params require that the examples cannot default
REQUIRED = {"attention": {"n_heads": 4}, "head": {"labels": ["no", "yes", "maybe"]}}
VOCAB = 260  # at least the default bytes tokenizer's 257 ids


def params_of(registry, comp):
    """Default-ish params of ``comp``, validated as a spec would validate them."""
    data = {"name": comp.name, **REQUIRED.get(comp.kind, {})}
    return registry.resolve(comp.params).model_validate(data), data


def context():
    from corekit.params import ModelContext

    return ModelContext(d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, context_length=32,
                        vocab_size=VOCAB, bias=True, dropout=0.0, layout="pre")


def model_with(registry, **section):
    """A small model whose ``[model]`` section has ``section`` merged in, in eval mode."""
    import torch
    from helpers import model_section

    from corekit.assemble import build_model
    from corekit.spec import load_spec

    spec = load_spec({"model": model_section(vocab_size=VOCAB, bias=True, **section)}, registry=registry)
    torch.manual_seed(0)
    return build_model(spec, registry).eval()


def check_model(model) -> None:
    """Forward, causality, KV-cache decoding and a backward pass of a whole model."""
    import torch

    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids)
        assert logits.shape == (2, 12, VOCAB) and torch.isfinite(logits).all()
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % VOCAB
        assert torch.allclose(model(changed)[:, :-1], logits[:, :-1], atol=1e-5), "a later token changed earlier logits"
        cache = model.new_cache()
        steps = [model(ids[:, :8], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(8, 12)]
        assert torch.allclose(torch.cat(steps, dim=1), logits, atol=1e-4), "decoding with the KV cache differs"
    model.train()
    model(ids).float().pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def check_norm(registry, comp, tmp_path):
    import torch

    params, data = params_of(registry, comp)
    norm = registry.build("norm", params, context())
    x = torch.randn(2, 5, 32)
    assert norm(x).shape == x.shape
    check_model(model_with(registry, norm=data))


def check_activation(registry, comp, tmp_path):
    import torch

    params, data = params_of(registry, comp)
    act = registry.build("activation", params, context())
    width = 2 * 16 if type(params).gated else 16
    assert act(torch.randn(2, 5, width)).shape == (2, 5, 16)
    check_model(model_with(registry, mlp={"activation": data}))


def check_feedforward(registry, comp, tmp_path):
    import torch

    params, data = params_of(registry, comp)
    params = params.complete(context())  # what spec validation does: fills in hidden_dim
    assert params.hidden_dim
    act = registry.build("activation", params.activation, context())
    block = registry.build("feedforward", params, context(), act)
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        y = block(x)
        assert y.shape == x.shape
        assert torch.allclose(block(x[:, :3]), y[:, :3], atol=1e-5), "a feed-forward block must not mix positions"
    if hasattr(block, "hidden_units"):  # what structured pruning reads: it must match the weights
        units = block.hidden_units()
        up, down = block.get_submodule(units.up), block.get_submodule(units.down)
        assert up.out_features == units.hidden_dim * (2 if units.gated else 1)
        assert down.in_features == units.hidden_dim
    for activation in ("gelu", "swiglu"):
        check_model(model_with(registry, mlp={**data, "activation": activation}))


def check_attention_kernel(registry, comp, tmp_path):
    import torch

    params, data = params_of(registry, comp)
    kernel = registry.build("attention_kernel", params, context())
    q, k, v = torch.randn(3, 2, 4, 6, 8).unbind(0)  # (B, H, T, D) each
    out = kernel(q, k, v, None, True, 0.0)
    assert out.shape == (2, 4, 6, 8) and torch.isfinite(out).all()
    bias = torch.zeros(1, 1, 1, 6)
    bias[..., 3:] = torch.finfo(torch.float32).min  # one query, keys 3.. hidden
    one = kernel(q[:, :, -1:], k, v, bias, False, 0.0)
    changed_k, changed_v = k.clone(), v.clone()
    changed_k[:, :, 3:] += 1.0
    changed_v[:, :, 3:] += 1.0
    assert torch.allclose(kernel(q[:, :, -1:], changed_k, changed_v, bias, False, 0.0), one, atol=1e-6)
    check_model(model_with(registry, attention={"name": "mha", "n_heads": 4, "kernel": data}))


def check_attention(registry, comp, tmp_path):
    import torch

    from corekit.modules.attention import AttnBatch
    from corekit.modules.positional import Positional

    params, data = params_of(registry, comp)
    kernel = registry.build("attention_kernel", "math", context())
    attn = registry.build("attention", params, context(), kernel)
    batch = AttnBatch(Positional(), torch.arange(6)[None], 0, None)
    assert attn(torch.randn(2, 6, 32), batch, None).shape == (2, 6, 32)
    if hasattr(attn, "head_layout"):  # what structured pruning reads: it must match the weights
        layout = attn.head_layout()
        qkv, out = attn.get_submodule(layout.qkv), attn.get_submodule(layout.out)
        assert qkv.out_features == (layout.n_heads + 2 * layout.n_kv_heads) * layout.head_dim
        assert out.in_features == layout.n_heads * layout.head_dim
    for position in ("rope", "alibi"):
        check_model(model_with(registry, attention=data, position=position))


def check_positional(registry, comp, tmp_path):
    from corekit.modules.positional import Positional

    params, data = params_of(registry, comp)
    assert isinstance(registry.build("positional", params, context()), Positional)
    for attention in ({"name": "mha", "n_heads": 4}, {"name": "gqa", "n_heads": 4, "n_kv_heads": 2}):
        check_model(model_with(registry, attention=attention, position=data))


def check_optimizer(registry, comp, tmp_path):
    import torch
    from torch import nn

    params, _ = params_of(registry, comp)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 10))
    model[3].requires_grad_(False)  # frozen, as the base weights of an adapter run
    optimizer = registry.build("optimizer", params, model)
    assert isinstance(optimizer, torch.optim.Optimizer)
    handed = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert handed == {id(p) for p in model.parameters() if p.requires_grad}, "frozen or missing parameters"
    before = [p.detach().clone() for p in model.parameters()]
    ids = torch.randint(0, 10, (4, 5))
    nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    optimizer.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert moved == [True, True, True, True, True, False, False]


def check_scheduler(registry, comp, tmp_path):
    import math

    import torch

    params, _ = params_of(registry, comp)
    variants = [params]
    if "warmup_steps" in type(params).model_fields:  # corekit may scale warmup down to 0
        variants.append(params.model_copy(update={"warmup_steps": 0}))
    for p in variants:
        optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
        scheduler = registry.build("scheduler", p, optimizer, 50)
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
        rates = []
        for _ in range(50):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert all(math.isfinite(r) and 0 <= r <= 0.1 + 1e-12 for r in rates), rates
        assert rates[0] > 0, f"the first step has lr 0 ({p})"


TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "if x < y | z > w: print('end of text')\n",
    "The quick brown fox jumps over the lazy dog. <|endoftext|> 0123456789\n",
] * 4


def check_tokenizer(registry, comp, tmp_path):
    from corekit.tokenizer import Tokenizer

    params, _ = params_of(registry, comp)
    tokenizer = registry.build("tokenizer", params)
    assert isinstance(tokenizer, Tokenizer)
    if tokenizer.needs_training:
        tokenizer = tokenizer.train(iter(TEXTS))
    text = "def fox(a):\n    return a < 10<|endoftext|>"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.eot_id in ids
    literal = tokenizer.encode("<|endoftext|>", allow_special=False)
    assert literal != [tokenizer.eot_id] and tokenizer.decode(literal) == "<|endoftext|>"
    assert tokenizer.encode_batch([text, "fox"]) == [ids, tokenizer.encode("fox")]
    with pytest.raises(ValueError):
        tokenizer.decode([tokenizer.vocab_size])
    if params.known_size() is not None:
        assert params.known_size() == tokenizer.vocab_size
    path = tokenizer.save(tmp_path / "tokenizer.json")
    loaded = registry.build("tokenizer", params).load(path)
    assert loaded.encode(text) == ids and loaded.vocab_size == tokenizer.vocab_size


def check_compressor(registry, comp, tmp_path):
    import torch

    from corekit.assemble import build_model
    from corekit.compress.base import Compressor
    from corekit.compress.run import compress_run
    from corekit.rundir import RunDir
    from corekit.run import Run
    from corekit.spec import load_spec
    from corekit.weights import save_weights
    from helpers import model_section

    params, _ = params_of(registry, comp)
    assert isinstance(registry.build("compressor", params), Compressor)
    spec = load_spec({"model": model_section(), "tokenizer": "bytes"}, registry=registry)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_spec(spec)
    registry.build("tokenizer", spec.tokenizer).save(run.tokenizer)
    torch.manual_seed(0)
    save_weights(build_model(spec, registry), spec, registry, run.path / "model.safetensors")

    report = compress_run(run.path, params, tmp_path / "out", registry=registry, measure_speed=False)
    assert report["compressor"]["name"] == comp.name
    compressed = Run.open(tmp_path / "out", registry)
    assert [c.name for c in compressed.spec.change_params("compressor")] == [comp.name]
    with torch.no_grad():
        logits = compressed.model().eval()(torch.tensor([[1, 2, 3, 4]]))
    assert logits.shape == (1, 4, compressed.spec.model.vocab_size) and torch.isfinite(logits).all()


CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "count 3 after five"},
    {"role": "assistant", "content": "six seven eight"},
    {"role": "user", "content": "and after one?", "input": "two words"},
    {"role": "assistant", "content": "two three"},
]


def check_template(registry, comp, tmp_path):
    from corekit.finetune.template import Segment, Template

    params, _ = params_of(registry, comp)
    template = registry.build("template", params)
    assert isinstance(template, Template)
    for turns in (CONVERSATION[1:3], CONVERSATION[:3], CONVERSATION):
        segments = template.render(turns)
        assert all(isinstance(s, Segment) for s in segments)
        trained = [s.text for s in segments if s.train]
        replies = [m["content"] for m in turns if m["role"] == "assistant"]
        assert trained == [r + template.stop for r in replies]
        assert template.text(turns).startswith(template.prompt(turns[:-1]) + replies[-1])
    assert template.stop in template.special_tokens


def check_adapter(registry, comp, tmp_path):
    import torch

    from corekit.finetune.adapter import Adapter
    from helpers import tiny_model

    params, _ = params_of(registry, comp)
    adapter = registry.build("adapter", params)
    assert isinstance(adapter, Adapter)
    model = tiny_model(registry)
    keys = set(model.state_dict())
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        base = model(ids)
    names = adapter.apply(model)
    assert names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = adapter.state(model)
    assert trainable and set(state) == trainable, "apply must leave exactly the adapter's parameters trainable"
    assert keys <= set(model.state_dict()), "apply changed the base weights' state-dict keys"
    with torch.no_grad():
        assert torch.allclose(model(ids), base, atol=1e-5), "a fresh adapter changed the model"
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        tuned = model(ids)
        assert not torch.allclose(tuned, base, atol=1e-4)
        with adapter.disabled(model):
            assert torch.allclose(model(ids), base, atol=1e-5)
        assert torch.allclose(model(ids), tuned)
    merged = adapter.merge(model)
    assert set(merged.state_dict()) == keys
    with torch.no_grad():
        assert torch.allclose(merged(ids), tuned, atol=1e-4)


def check_head(registry, comp, tmp_path):
    """A run whose changes hold the head: its model scores the labels, and its saved weights load
    back into the same structure."""
    import torch

    from corekit.change import Head
    from corekit.run import Run
    from corekit.spec import load_spec
    from corekit.weights import save_weights
    from helpers import model_section

    params, data = params_of(registry, comp)
    assert isinstance(registry.build("head", params), Head)
    spec = load_spec({"model": model_section(vocab_size=VOCAB), "changes": [{"head": data}]}, registry=registry)
    model = Run(tmp_path, spec, registry).model(seed=0).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        scores = model(ids)
    assert scores.shape == (1, 5, len(params.labels))
    save_weights(model, spec, registry, tmp_path / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(Run(tmp_path, spec, registry).model().eval()(ids), scores)


def stage_spec(registry, section: str | None, table) -> object:
    """A small run spec whose ``section`` (if any) is ``table``."""
    from helpers import model_section

    from corekit.spec import load_spec

    data = {"model": model_section(vocab_size=VOCAB)}
    if section is not None:
        data[section] = table
    return load_spec(data, registry=registry)


def run_context(spec, registry, run_dir: Path):
    """A :class:`corekit.stage.RunContext` over ``run_dir``, printing into a buffer (``ctx.printed()``)."""
    import io

    from rich.console import Console

    from corekit.rundir import RunDir
    from corekit.stage import RunContext

    buffer = io.StringIO()
    console = Console(file=buffer, width=200, highlight=False)
    ctx = RunContext(spec, RunDir(run_dir), registry, console, console)
    ctx.printed = buffer.getvalue  # type: ignore[attr-defined]  # the test's own handle on the output
    return ctx


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} if path.exists() else set()


def check_stage(registry, comp, tmp_path):
    """A stage's section is part of the run spec (model fields, JSON Schema, unknown keys refused);
    run directly it writes its outputs atomically, after which it is current; and ``corekit run``'s
    loop (:func:`corekit.stage.run_stages`, with the built-in stages switched off) runs it once and
    skips it the next time."""
    from corekit.errors import SpecError
    from corekit.spec import run_spec_type, spec_schema
    from corekit.stage import Stage, run_stages, stages

    params, _ = params_of(registry, comp)
    stage = registry.build("stage", params)
    assert isinstance(stage, Stage) and stage.name == comp.name
    assert comp.name in [s.name for s in stages(registry)]
    if stage.section is not None:
        assert stage.section in run_spec_type(registry).model_fields
        assert stage.section in spec_schema(registry)["properties"]
        with pytest.raises(SpecError, match=rf"{re.escape(stage.section)}\.no_such_key: unknown field"):
            stage_spec(registry, stage.section, {"no_such_key": 1})
    spec = stage_spec(registry, stage.section, {})
    assert stage.wanted(spec), "an empty section (all defaults) should ask for the stage"

    ctx = run_context(spec, registry, tmp_path / "run")
    assert not stage.current(ctx), "a fresh run directory cannot hold the stage's outputs"
    stage.run(ctx)
    written = files_under(ctx.run.path)
    assert written, "the stage wrote nothing into the run directory"
    assert not [f for f in written if f.endswith(".tmp")], f"leftover temporary files: {written}"
    assert stage.current(ctx), "after run() the stage must be current"

    # corekit run: only this stage registered (the built-ins disabled), so the loop is exercised alone
    module = sys.modules[comp.source.module]
    builtins = [f"stage:{s.name}" for s in stages(registry) if s.name != comp.name]
    user_file = tmp_path / "registry.toml"
    user_file.write_text(f"disable = {json.dumps(builtins)}\n", encoding="utf-8")
    alone = load_registry(user_file, autoload=False, plugins=[module])
    assert [s.name for s in stages(alone)] == [comp.name]
    spec = stage_spec(alone, stage.section, {})
    ctx = run_context(spec, alone, tmp_path / "looped")
    run_stages(ctx)
    assert files_under(ctx.run.path) == written
    first = ctx.printed()
    run_stages(ctx)
    assert ctx.printed() != first and "skipped" in ctx.printed()[len(first):], "a current stage must be skipped"


CHECKS = {
    "norm": check_norm,
    "activation": check_activation,
    "feedforward": check_feedforward,
    "attention_kernel": check_attention_kernel,
    "attention": check_attention,
    "positional": check_positional,
    "optimizer": check_optimizer,
    "scheduler": check_scheduler,
    "tokenizer": check_tokenizer,
    "compressor": check_compressor,
    "template": check_template,
    "adapter": check_adapter,
    "head": check_head,
    "stage": check_stage,
}


def commands_of(module) -> list[str]:
    """The command names ``module``'s ``corekit_register_commands`` adds to a bare app."""
    import typer

    app = typer.Typer()
    module.corekit_register_commands(app=app)
    return [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands] + [
        g.name for g in app.registered_groups]


def check_other_hooks(registry, module):
    """The trainer-callback and export-preparation hooks of a block, if it has them."""
    import torch

    from corekit.spec import load_spec
    from helpers import model_section, tiny_model

    spec = load_spec({"model": model_section(vocab_size=VOCAB)}, registry=registry)
    hooks = registry.plugin_manager.hook
    if hasattr(module, "corekit_trainer_callbacks"):
        from lightning.pytorch.callbacks import Callback

        callbacks = [cb for cbs in hooks.corekit_trainer_callbacks(spec=spec) for cb in cbs]
        assert callbacks and all(isinstance(cb, Callback) for cb in callbacks)
    if hasattr(module, "corekit_register_commands"):
        from typer.testing import CliRunner

        from corekit.cli.main import make_app

        app = make_app(registry)  # the built-in commands and the block's, no name clash
        names = commands_of(module)
        assert names
        result = CliRunner().invoke(app, ["--help"])
        assert result.exit_code == 0 and all(name in result.output for name in names), result.output
        for name in names:
            result = CliRunner().invoke(app, [name, "--help"])
            assert result.exit_code == 0, result.output
    if hasattr(module, "corekit_prepare_export"):
        model = tiny_model(registry)
        prepared = hooks.corekit_prepare_export(model=model, spec=spec)
        assert prepared is not None and prepared is not model
        ids = torch.tensor([[3, 1, 4, 1, 5]])
        with torch.no_grad():
            assert torch.allclose(prepared(ids), model(ids), atol=1e-5)


@pytest.mark.parametrize("block", PLUGIN_BLOCKS, ids=str)
def test_plugin_example_registers_builds_and_works(block, monkeypatch, tmp_path):
    from corekit.spec import spec_schema

    registry, module, components = load_block(block, monkeypatch)
    spec_schema(registry)  # its params appear in the JSON Schema
    for comp in components:
        work = tmp_path / comp.name
        work.mkdir()
        CHECKS[comp.kind](registry, comp, work)
    check_other_hooks(registry, module)
    assert components or any(hasattr(module, hook) for hook in (
        "corekit_trainer_callbacks", "corekit_prepare_export", "corekit_register_commands"))


def test_a_broken_example_fails(monkeypatch, tmp_path):
    """The checks catch a doc example whose component does not work (here: a norm that changes the shape)."""
    broken = next(b for b in PLUGIN_BLOCKS if 'registry.add("norm"' in b.code)
    broken = Block(broken.path, broken.line,
                   broken.code.replace("return DyT(ctx.d_model,", "return DyT(ctx.d_model + 1,"))
    registry, _, components = load_block(broken, monkeypatch)
    with pytest.raises(Exception):
        check_norm(registry, components[0], tmp_path)


def block_with(text: str) -> Block:
    return next(b for b in PLUGIN_BLOCKS if text in b.code)


def test_the_stage_example_writes_its_card_and_is_then_current(monkeypatch, tmp_path):
    """The `card` stage of the guide: [card] is a run spec section, and its card says what the spec says."""
    from corekit.errors import SpecError
    from corekit.spec import run_spec_type, spec_schema

    registry, module, components = load_block(block_with('registry.add("stage"'), monkeypatch)
    assert [c.name for c in components] == ["card"]
    assert "card" in run_spec_type(registry).model_fields
    assert spec_schema(registry)["properties"]["card"]
    with pytest.raises(SpecError, match=r"card\.titel: unknown field 'titel'; allowed: title, license, intended_use"):
        stage_spec(registry, "card", {"titel": "typo"})
    stage = registry.build("stage", "card")
    assert not stage.wanted(stage_spec(registry, None, None)), "a spec without [card] must skip the stage"

    spec = stage_spec(registry, "card", {"title": "tiny", "license": "MIT"})
    ctx = run_context(spec, registry, tmp_path / "run")
    assert stage.wanted(spec) and not stage.current(ctx)
    stage.run(ctx)
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.startswith("# tiny\n") and "2 layers, width 32" in card and "- license: MIT" in card
    assert stage.current(ctx)
    changed = run_context(stage_spec(registry, "card", {"title": "renamed"}), registry, tmp_path / "run")
    assert not stage.current(changed), "a changed [card] must make the stage run again"


def test_the_commands_example_runs_on_the_command_line(monkeypatch, tmp_path):
    """`corekit runs ROOT` of the guide, through the real command line of a registry holding it."""
    from typer.testing import CliRunner

    from corekit.cli.main import make_app
    from corekit.errors import CorekitError

    registry, module, _ = load_block(block_with("def corekit_register_commands"), monkeypatch)
    app = make_app(registry)
    root = tmp_path / "runs"
    for run, files in {"tiny": ["spec.toml", "tokenizer.json", "data/manifest.json", "model.safetensors",
                                "export/corekit-export.json"],
                       "fresh": ["spec.toml"], "not-a-run": ["notes.txt"]}.items():
        for file in files:
            (root / run / file).parent.mkdir(parents=True, exist_ok=True)
            (root / run / file).write_text("", encoding="utf-8")
    result = CliRunner().invoke(app, ["runs", str(root)])
    assert result.exit_code == 0, result.output
    assert result.output == "fresh: nothing yet\ntiny: tokenizer, data, trained, exported\n"
    result = CliRunner().invoke(app, ["runs", str(tmp_path / "missing")])
    assert isinstance(result.exception, CorekitError)


def test_a_command_name_already_taken_is_an_error_naming_both(monkeypatch):
    from corekit.cli.main import make_app
    from corekit.errors import PluginConflictError

    block = block_with("def corekit_register_commands")
    clashing = Block(block.path, block.line, block.code.replace('app.command("runs")', 'app.command("train")'))
    registry, _, _ = load_block(clashing, monkeypatch)
    with pytest.raises(PluginConflictError,
                       match=r"`corekit train`: corekit:corekit_plugins\.commands and .*corekit_docs_example"):
        make_app(registry)


def test_a_broken_stage_example_fails(monkeypatch, tmp_path):
    """The stage checks catch a section that lets unknown keys through."""
    block = block_with('registry.add("stage"')
    broken = Block(block.path, block.line, block.code.replace('extra="forbid"', 'extra="ignore"'))
    assert broken.code != block.code
    registry, _, components = load_block(broken, monkeypatch)
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        check_stage(registry, components[0], tmp_path)


# --------------------------------------------------------------------------- README and links
def test_readme_is_a_short_entry_point_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert 120 <= lines <= 260, f"README.md has {lines} lines"
    assert MAIN_JOB in text and TESTS in text
    history = re.findall(r"(?i)\bissue \d", text)
    assert not history, history
    assert TESTS in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path: Path) -> list[str]:
    """Targets of the Markdown links in ``path`` that are not URLs or pure anchors (code blocks skipped)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


DOCS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of ``path``: lowercased, punctuation dropped, spaces to
    hyphens, repeated headings numbered."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        seen.setdefault(f"{slug}-{count}" if count else slug, 1)
    return set(seen)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_headings(path):
    broken = []
    for target in relative_links(path) + [t for t in LINK.findall(path.read_text(encoding="utf-8"))
                                          if t.startswith("#")]:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file) if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)} has broken links: {broken}"


def test_the_spec_reference_covers_every_section_field_and_builtin_component(registry):
    """docs/specs.md names every field of every section and of every built-in component."""
    from corekit.data.spec import DataSpec
    from corekit.export.spec import ExportSpec
    from corekit.finetune.spec import FinetuneData, FinetuneSpec
    from corekit.spec import ModelSpec, run_spec_type
    from corekit.train.spec import TrainSpec

    text = (ROOT / "docs" / "specs.md").read_text(encoding="utf-8")
    missing = []
    for model in (run_spec_type(registry), ModelSpec, DataSpec, TrainSpec, ExportSpec, FinetuneSpec, FinetuneData):
        missing += [f"{model.__name__}.{f}" for f in model.model_fields
                    if f"`{f}`" not in text and f"`[{f}]`" not in text]  # a section: `[model]`
    for comp in registry.components():
        if f"`{comp.name}`" not in text:
            missing.append(f"{comp.kind}:{comp.name}")
        missing += [f"{comp.kind}:{comp.name}.{f}" for f in comp.params.model_fields if f"`{f}`" not in text]
    for kind, name in registry.defaults.items():
        if f"| `{kind}` | `{name}`" not in text:
            missing.append(f"[defaults] {kind} = {name}")
    assert not missing, f"docs/specs.md does not describe: {missing}"


def test_the_docs_exist_and_the_readme_links_every_guide():
    guides = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"specs.md", "plugins.md", "edge.md"} <= guides
    linked = {Path(t.split("#")[0]).name for t in relative_links(README)}
    assert guides <= linked, f"README.md does not link {sorted(guides - linked)}"
    assert (ROOT / "CHANGELOG.md").is_file()
