"""The torch-free edge runtime: generation against PyTorch, sampling, no-torch proof, bad bundles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import flip_byte

from corekit.edge.cli import TextStream, main
from corekit.edge.manifest import MANIFEST
from corekit.edge.runtime import EdgeModel
from corekit.edge.sampling import sample_next, top_k_filter, top_p_filter
from corekit.errors import CorekitError

PROMPTS = ["one two", "def three_four(x):\n", "nine", "x + 1"]


def torch_model_and_tokenizer(run):
    from corekit.run import Run

    opened = Run.open(run)
    return opened.model().eval(), opened.tokenizer


@pytest.mark.slow
def test_edge_greedy_equals_pytorch_greedy_with_the_kv_cache(trained_run, bundle):
    from corekit.generation import generate

    model, tokenizer = torch_model_and_tokenizer(trained_run)
    edge = EdgeModel(bundle)
    ids = [tokenizer.encode(p) for p in PROMPTS]  # different lengths: left padding in one batch
    expected = generate(model, ids, max_new_tokens=40, temperature=0, use_cache=True)
    assert edge.generate(ids, max_new_tokens=40, temperature=0) == expected
    assert edge.generate(PROMPTS, max_new_tokens=40, temperature=0) == [tokenizer.decode(e) for e in expected]
    # one row alone decodes as it does in the padded batch
    assert edge.generate([ids[2]], max_new_tokens=40, temperature=0) == [expected[2]]
    # stop tokens end a row and are not returned
    stop = expected[0][5]
    cut = edge.generate([ids[0]], max_new_tokens=40, temperature=0, stop_tokens=[stop])[0]
    assert cut == expected[0][: expected[0].index(stop)]


@pytest.mark.slow
def test_edge_tokenizer_matches_the_run_tokenizer(trained_run, bundle):
    _, tokenizer = torch_model_and_tokenizer(trained_run)
    edge = EdgeModel(bundle)
    for text in [*PROMPTS, "héllo 中文 <|endoftext|> done", ""]:
        assert edge.encode(text) == tokenizer.encode(text)
        assert edge.decode(tokenizer.encode(text)) == text


@pytest.mark.slow
def test_sampling_is_seeded_and_bounded(bundle):
    edge = EdgeModel(bundle)
    kwargs = dict(max_new_tokens=20, temperature=0.9, top_k=20, top_p=0.9)
    first = edge.generate(PROMPTS[:2], seed=3, **kwargs)
    assert edge.generate(PROMPTS[:2], seed=3, **kwargs) == first
    assert edge.generate(PROMPTS[:2], seed=4, **kwargs) != first
    greedy = edge.generate(PROMPTS[:2], max_new_tokens=20, temperature=0)
    assert edge.generate(PROMPTS[:2], max_new_tokens=20, temperature=1.0, top_k=1, seed=0) == greedy
    with pytest.raises(CorekitError, match="temperature"):
        edge.generate(PROMPTS, temperature=-1)
    with pytest.raises(CorekitError, match="context"):
        edge.generate([[1] * edge.context_length])


def test_numpy_filters_match_the_torch_ones():
    from corekit import generation

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 50)).astype(np.float32)
    for k in (1, 5, 50):
        np.testing.assert_array_equal(top_k_filter(logits, k),
                                      generation.top_k_filter(torch.from_numpy(logits), k).numpy())
    for p in (0.1, 0.5, 0.95):
        np.testing.assert_array_equal(np.isinf(top_p_filter(logits, p)),
                                      np.isinf(generation.top_p_filter(torch.from_numpy(logits), p).numpy()))


def test_sampling_follows_the_distribution():
    logits = np.log(np.array([[0.1, 0.2, 0.7]]))
    rng = np.random.default_rng(0)
    draws = np.array([sample_next(logits, rng=rng)[0] for _ in range(20000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 20000, [0.1, 0.2, 0.7], atol=0.015)
    # top-p 0.75 keeps {0.7, 0.2}: renormalised 2/9 and 7/9
    draws = np.array([sample_next(logits, top_p=0.75, rng=rng)[0] for _ in range(20000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 20000, [0, 2 / 9, 7 / 9], atol=0.015)


NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from corekit.edge import EdgeModel
model = EdgeModel(sys.argv[1])
print(repr(model.generate(["one two"], max_new_tokens=12, temperature=0)[0]))
from corekit.edge.cli import main
main([sys.argv[1], "--prompt", "one", "-n", "8", "--temperature", "0"])
"""


@pytest.mark.slow
def test_edge_generates_with_torch_blocked(bundle, trained_run):
    from corekit.generation import generate

    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    model, tokenizer = torch_model_and_tokenizer(trained_run)
    expected = generate(model, ["one two"], tokenizer=tokenizer, max_new_tokens=12, temperature=0)[0]
    first, second = result.stdout.split("\n", 1)
    assert first == repr(expected)
    assert second.startswith("one") and "tokens/s" in result.stderr


@pytest.mark.slow
def test_cli_streams_and_reports(bundle, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(bundle), "--prompt", "one two", "-n", "10", "--temperature", "0"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr()
    edge = EdgeModel(bundle)
    assert out.out == "one two" + edge.generate(["one two"], max_new_tokens=10, temperature=0)[0] + "\n"
    assert "[10 tokens in" in out.err


def test_text_stream_holds_back_partial_characters():
    from tokenizers import Tokenizer

    from corekit_plugins.tokenizers.byte_level import ByteTokenizer

    hf = Tokenizer.from_str(ByteTokenizer([]).edge_json())
    stream = TextStream(lambda ids: hf.decode(ids))
    pieces = [stream.push(b) for b in "aé中".encode()]
    assert pieces == ["a", "", "é", "", "", "中"]
    assert stream.flush() == ""


def copy_bundle(bundle, tmp_path):
    target = tmp_path / "b"
    shutil.copytree(bundle, target)
    return target


def run_edge(capsys, target):
    with pytest.raises(SystemExit) as exc:
        main([str(target), "--prompt", "one", "-n", "2"])
    return exc.value.code, capsys.readouterr().err


@pytest.mark.slow
def test_tampered_missing_and_future_bundles_give_clear_errors(bundle, tmp_path, capsys):
    target = copy_bundle(bundle, tmp_path)
    flip_byte(target / "model.onnx", 100)
    with pytest.raises(CorekitError, match="model.onnx does not match the sha256"):
        EdgeModel(target)
    code, err = run_edge(capsys, target)
    assert code == 2 and "sha256" in err and "Traceback" not in err

    target = copy_bundle(bundle, tmp_path / "missing")
    (target / "tokenizer.json").unlink()
    with pytest.raises(CorekitError, match="missing tokenizer.json"):
        EdgeModel(target)
    code, err = run_edge(capsys, target)
    assert code == 2 and "missing tokenizer.json" in err and "Traceback" not in err

    target = copy_bundle(bundle, tmp_path / "future")
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["format_version"] = 99
    (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorekitError, match="format version 99.*up to 1.*Upgrade corekit"):
        EdgeModel(target)
    code, err = run_edge(capsys, target)
    assert code == 2 and "format version 99" in err

    code, err = run_edge(capsys, tmp_path / "nowhere")
    assert code == 2 and "not a directory" in err
    (tmp_path / "empty").mkdir()
    code, err = run_edge(capsys, tmp_path / "empty")
    assert code == 2 and "no corekit-export.json" in err


@pytest.mark.slow
@pytest.mark.parametrize("field, value, message", [
    ("files", [], "files must map"),
    ("cache", {}, "cache.n_layers must be int"),
    ("model", {"vocab_size": "257", "context_length": 64}, "model.vocab_size must be int"),
])
def test_a_hand_edited_manifest_gives_a_clear_error(bundle, tmp_path, capsys, field, value, message):
    target = copy_bundle(bundle, tmp_path)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest[field] = value
    (target / MANIFEST).write_text(json.dumps(manifest))
    code, err = run_edge(capsys, target)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.slow
def test_a_manifest_that_stops_listing_the_model_is_refused(bundle, tmp_path):
    target = copy_bundle(bundle, tmp_path)
    manifest = json.loads((target / MANIFEST).read_text())
    del manifest["files"]["model.onnx"]  # then a tampered model.onnx would go unchecked
    (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorekitError, match="files must list model.onnx"):
        EdgeModel(target)


@pytest.mark.slow
def test_tokenizer_failures_are_user_errors(bundle, monkeypatch):
    edge = EdgeModel(bundle)

    class Failing:
        def encode(self, text, add_special_tokens=False):
            raise Exception("WordLevel error: Missing [UNK] token from the vocabulary")

    monkeypatch.setattr(edge, "tokenizer", Failing())
    with pytest.raises(CorekitError, match="cannot encode 'naïve'.*Missing \\[UNK\\]"):
        edge.generate(["naïve"])
