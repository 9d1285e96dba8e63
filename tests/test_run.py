"""corekit.run.Run: the one place a run directory is opened."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from corekit.errors import CorekitError
from corekit.run import Run

ROOT = Path(__file__).resolve().parents[1]


def test_open_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(CorekitError, match=r"is not a trained run: spec.toml and model.safetensors missing"):
        Run.open(tmp_path)
    (tmp_path / "spec.toml").write_text("[model]\nattention = { n_heads = 2 }\n")
    with pytest.raises(CorekitError, match=r"is not a trained run: model.safetensors missing"):
        Run.open(tmp_path)
    assert Run.open(tmp_path, trained=False).trained is False


def test_trained_run_model_is_its_spec_model_with_the_saved_weights(trained_run, registry):
    """Against an independent load: build_model of the spec, then safetensors' own loader."""
    from safetensors.torch import load_file

    from corekit.assemble import build_model

    run = Run.open(trained_run, registry)
    assert run.trained and run.has_data() and run.weights == trained_run / "model.safetensors"
    reference = build_model(run.spec, registry)
    missing, unexpected = reference.load_state_dict(load_file(str(run.weights)), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # the tied head is the embedding
    ids = torch.tensor([run.tokenizer.encode("def one_two(x):")])
    with torch.no_grad():
        assert torch.equal(run.model().eval()(ids), reference.eval()(ids))
    assert run.tokenizer.decode(run.tokenizer.encode("nine eight")) == "nine eight"
    assert run.plain_spec is run.spec and run.is_plain and run.head is None


def test_untrained_run_model_is_seeded(tmp_path, registry):
    from corekit.spec import load_spec

    spec = load_spec({"model": {"context_length": 8, "d_model": 8, "n_layers": 1, "attention": {"n_heads": 2}}},
                     registry=registry)
    run = Run(tmp_path, spec, registry)
    first, again, other = run.model(seed=3), run.model(seed=3), run.model(seed=4)
    assert torch.equal(first.tok_emb.weight, again.tok_emb.weight)
    assert not torch.equal(first.tok_emb.weight, other.tok_emb.weight)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_assembly_knows_nothing_of_later_stages():
    """assemble.py turns names into modules; what fine-tuning and compression add to a model is
    applied when a run is opened (corekit.run), not while assembling."""
    later = ("corekit.finetune", "corekit.compress", "corekit.export", "corekit.cli")
    imported = _imports(ROOT / "corekit" / "assemble.py")
    assert not [m for m in imported if m.startswith(later)], imported
    source = (ROOT / "corekit" / "assemble.py").read_text(encoding="utf-8")
    for word in ("finetune", "adapter", "classifier", "compressed", "lm_head"):
        assert word not in source, word
