"""End to end: fine-tuning the small trained run on synthetic tasks it cannot do before.

Each task's run is made once per module and inspected by several tests: the figures before and
after, the run directory the other commands take, the CLI around it.
"""

from __future__ import annotations

import io
import json
import os

import pytest
import torch

from finetune_data import counting_jsonl, finetune_spec, shouting_preferences, sorted_digits_csv
from helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("finetune")


def _finetune(spec, out, **kwargs):
    from corekit.finetune.train import finetune

    return finetune(spec, out, progress=False, **kwargs)


@pytest.fixture(scope="module")
def classifier(trained_run, work):
    """Full fine-tuning of a classifier on 'are these digits sorted?'."""
    data = sorted_digits_csv(work / "sorted.csv")
    spec = finetune_spec(work / "cls.toml", trained_run, "classify", data, steps=120)
    return _finetune(spec, work / "cls")


@pytest.fixture(scope="module")
def instructed(trained_run, work):
    """Full instruction tuning with the chatml template (its two tokens are new to the tokenizer)."""
    data = counting_jsonl(work / "count.jsonl")
    spec = finetune_spec(work / "ins.toml", trained_run, "instruct", data, steps=150,
                         extra='eval_examples = 30\nmax_new_tokens = 24\n[finetune.template]\nname = "chatml"')
    return _finetune(spec, work / "ins")


@pytest.fixture(scope="module")
def lora(trained_run, work):
    """LoRA instruction tuning (chat-form data, chatml), left unmerged."""
    data = counting_jsonl(work / "count-chat.jsonl", chat=True)
    spec = finetune_spec(work / "lora.toml", trained_run, "instruct", data, steps=150, lr=1e-2,
                         extra='adapter = "lora"\neval_examples = 30\nmax_new_tokens = 24\n'
                               '[finetune.template]\nname = "chatml"')
    return _finetune(spec, work / "lora")


# --------------------------------------------------------------------------- classify
def test_classifier_learns_what_it_could_not_do(classifier):
    assert classifier["before"]["accuracy"] < 0.7  # a fresh head: about chance
    assert classifier["after"]["accuracy"] >= 0.85
    assert classifier["after"]["macro_f1"] >= 0.85
    confusion = classifier["after"]["confusion"]
    assert sum(map(sum, confusion)) == classifier["examples"]["val"] == classifier["after"]["count"]


def test_classifier_run_directory(classifier):
    from corekit.plugins import get_registry
    from corekit.spec import load_spec

    out = classifier["out"]
    spec = load_spec(f"{out}/spec.toml", registry=get_registry())
    assert spec.finetune.labels == ["sorted", "unsorted"]
    # the model's head is recorded as a change, with what reading its output needs
    (head,) = spec.change_params()
    assert (head.name, head.labels, head.pooling) == ("classifier", ["sorted", "unsorted"], "last")
    png = open(f"{out}/confusion.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    report = json.loads(open(f"{out}/finetune-report.json").read())
    assert report["after"]["accuracy"] == classifier["after"]["accuracy"]


def test_classify_eval_and_generate_commands(classifier, capsys):
    out = classifier["out"]
    code, stdout, _ = run_cli(capsys, "classify", out, "--text", "0123456789", "--text", "97531", "--json")
    assert code == 0
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [r["label"] for r in rows] == ["sorted", "unsorted"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    code, stdout, _ = run_cli(capsys, "eval", out)
    assert code == 0 and f"accuracy {classifier['after']['accuracy']:.4f}" in stdout
    code, _, err = run_cli(capsys, "generate", out, "--prompt", "x")
    assert code == 2 and "classifier" in err and "Traceback" not in err


def test_classifier_exports_and_runs_on_the_edge(classifier, capsys):
    from corekit.edge.runtime import EdgeModel
    from corekit.finetune.serve import classify_texts, load_run

    out = classifier["out"]
    code, _, err = run_cli(capsys, "export", "onnx", out)
    assert code == 0, err
    edge = EdgeModel(f"{out}/export")
    assert edge.task == {"kind": "classify", "labels": ["sorted", "unsorted"], "pooling": "last", "max_length": 64}
    texts = ["0123456789", "97531", "1112223", "5"]
    torch_rows = classify_texts(*load_run(out), texts)
    for mine, theirs in zip(edge.classify(texts), torch_rows):
        assert mine["label"] == theirs["label"]
        for label in theirs["probabilities"]:
            assert abs(mine["probabilities"][label] - theirs["probabilities"][label]) < 1e-4
    from corekit.edge.cli import main as edge_main

    with pytest.raises(SystemExit) as exit_info:
        edge_main([f"{out}/export", "--prompt", "x"])
    assert exit_info.value.code == 2 and "--classify" in capsys.readouterr().err


def test_a_classifier_is_quantized_but_not_pruned_or_distilled(classifier, capsys):
    """quantize takes a classifier's linear layers like any others; prune and distill work on
    language models and refuse it before anything is written."""
    from corekit.edge.runtime import EdgeModel
    from corekit.finetune.serve import classify_texts, load_run
    from corekit.spec import change_kind

    out = classifier["out"]
    code, _, err = run_cli(capsys, "compress", out, "--with", "quantize", "--no-speed", "--out", f"{out}-int8")
    assert code == 0, err
    report = json.loads(open(f"{out}-int8/compress-report.json").read())
    assert any("classifier" in note for note in report["notes"]) and "val_loss" not in report["after"]
    spec, tokenizer, model = load_run(f"{out}-int8")
    assert [kind for kind, _ in map(change_kind, spec.changes)] == ["head", "compressor"]
    texts = ["0123456789", "97531", "1112223"]
    rows = classify_texts(spec, tokenizer, model, texts)
    assert [r["label"] for r in rows] == [r["label"] for r in classify_texts(*load_run(out), texts)]
    code, _, err = run_cli(capsys, "export", "onnx", f"{out}-int8")
    assert code == 0, err
    assert [r["label"] for r in EdgeModel(f"{out}-int8/export").classify(texts)] == [r["label"] for r in rows]
    for name in ("prune", "distill"):
        code, _, err = run_cli(capsys, "compress", out, "--with", name, "--out", f"{out}-{name}")
        assert code == 2 and "is a classifier" in err and "Traceback" not in err, err
        assert not os.path.exists(f"{out}-{name}")


def test_head_only_leaves_the_body_untouched(trained_run, work):
    from safetensors.torch import load_file

    spec = finetune_spec(work / "head.toml", trained_run, "classify", work / "sorted.csv", steps=15,
                         extra="trainable_blocks = 0\npooling = \"mean\"")
    report = _finetune(spec, work / "head")
    assert report["parameters"]["trainable"] == 64 * 2 + 2  # the head's weight and bias
    base, tuned = load_file(f"{trained_run}/model.safetensors"), load_file(f"{work}/head/model.safetensors")
    body = [k for k in base if k.startswith("blocks.")]
    assert body and all(torch.equal(base[k], tuned[k]) for k in body)
    assert "lm_head.proj.weight" in tuned


# --------------------------------------------------------------------------- instruct
def test_instruction_tuning_teaches_the_format(instructed):
    assert instructed["before"]["exact_match"] <= 0.1
    assert instructed["after"]["exact_match"] >= 0.8
    assert instructed["after"]["rouge_l"] > instructed["before"]["rouge_l"] + 0.5
    assert instructed["after"]["val_loss"] < instructed["before"]["val_loss"] / 10


def test_template_tokens_are_added_and_the_embedding_grows(instructed, trained_run):
    from corekit.assemble import build_tokenizer
    from corekit.finetune.serve import load_run
    from corekit.plugins import get_registry
    from corekit.spec import load_spec

    registry = get_registry()
    base = load_spec(f"{trained_run}/spec.toml", registry=registry)
    spec, tokenizer, model = load_run(instructed["out"], registry)
    assert spec.tokenizer.added_tokens == ["<|im_start|>", "<|im_end|>"]
    old = build_tokenizer(base, registry).load(f"{trained_run}/tokenizer.json").vocab_size
    assert tokenizer.special_tokens["<|im_start|>"] == old and tokenizer.special_tokens["<|im_end|>"] == old + 1
    assert model.tok_emb.num_embeddings == spec.model.vocab_size == max(base.model.vocab_size, old + 2)


def test_chat_answers_through_the_template(instructed, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("count 3 after five\n/reset\ncount 2 after three\n/exit\n"))
    code, stdout, _ = run_cli(capsys, "chat", instructed["out"])
    assert code == 0
    assert "model> six seven eight\n" in stdout and "model> four five\n" in stdout and "forgotten" in stdout


def test_generate_takes_the_instructed_run(instructed, capsys):
    prompt = "<|im_start|>user\ncount 2 after three<|im_end|>\n<|im_start|>assistant\n"
    code, stdout, _ = run_cli(capsys, "generate", instructed["out"], "--prompt", prompt, "--temperature", "0",
                              "--stop", "<|im_end|>")
    assert code == 0 and stdout.endswith("four five\n")


# --------------------------------------------------------------------------- LoRA
def test_lora_learns_and_saves_only_the_adapter(lora, trained_run):
    from safetensors.torch import load_file

    assert lora["before"]["exact_match"] <= 0.1 and lora["after"]["exact_match"] >= 0.8
    out = lora["out"]
    # the frozen weights are the base run's file itself (a hard link), the trained ones a small file
    assert os.stat(f"{out}/model.safetensors").st_ino == os.stat(f"{trained_run}/model.safetensors").st_ino
    adapter = load_file(f"{out}/adapter.safetensors")
    lora_keys = {k for k in adapter if k.endswith(("lora_A", "lora_B"))}
    assert lora_keys == {f"blocks.{i}.attn.{m}.{p}"
                         for i in range(2) for m in ("qkv", "out") for p in ("lora_A", "lora_B")}
    assert set(adapter) - lora_keys == {"tok_emb.weight.rows_from.257"}  # the two chatml tokens' rows
    assert adapter["tok_emb.weight.rows_from.257"].shape == (2, 64)
    n_lora = sum(t.numel() for k, t in adapter.items() if k in lora_keys)
    assert lora["parameters"]["trainable"] == n_lora + 2 * 64


def test_lora_merge_gives_the_same_model(lora, capsys):
    from corekit.finetune.serve import load_run
    from corekit.plugins import get_registry
    from corekit.run import Run

    registry = get_registry()
    code, _, _ = run_cli(capsys, "finetune", lora["out"], "--merge")
    assert code == 0
    merged_dir = lora["out"] + "-merged"
    spec_u, _, unmerged = load_run(lora["out"], registry)
    spec_m, _, merged = load_run(merged_dir, registry)
    assert [c.name for c in spec_u.change_params("adapter")] == ["lora"] and not spec_m.changes
    assert not Run.open(lora["out"], registry).is_plain and Run.open(merged_dir, registry).is_plain
    assert not any("lora" in k for k in merged.state_dict())
    ids = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), unmerged(ids), rtol=1e-5, atol=1e-5)
    # compressors take either: the unmerged run is compressed as the plain model it stands for
    for source in (lora["out"], merged_dir):
        code, _, err = run_cli(capsys, "compress", source, "--with", "quantize", "--no-speed")
        assert code == 0, err
    spec_q, _, quantized = load_run(lora["out"] + "-quantize", registry)
    assert [c.name for c in spec_q.change_params()] == ["quantize"]  # the adapter folded in, then quantized
    assert not os.path.exists(lora["out"] + "-quantize/adapter.safetensors")
    spec_mq, _, merged_quantized = load_run(merged_dir + "-quantize", registry)
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids), merged_quantized(ids), rtol=0, atol=0)


def test_lora_classifier(trained_run, work, capsys):
    """LoRA with a classification head: the head trains beside the adapter and is saved with it."""
    from safetensors.torch import load_file

    spec = finetune_spec(work / "cls-lora.toml", trained_run, "classify", work / "sorted.csv", steps=120, lr=1e-2,
                         extra='adapter = "lora"')
    report = _finetune(spec, work / "cls-lora")
    assert report["before"]["accuracy"] < 0.7 and report["after"]["accuracy"] >= 0.85
    adapter = load_file(f"{work}/cls-lora/adapter.safetensors")
    assert {k for k in adapter if not k.endswith(("lora_A", "lora_B"))} == {"lm_head.proj.weight", "lm_head.proj.bias"}
    assert report["files"]["adapter_bytes"] == os.path.getsize(f"{work}/cls-lora/adapter.safetensors")
    code, stdout, _ = run_cli(capsys, "classify", f"{work}/cls-lora", "--text", "0123456789", "--text", "97531",
                              "--json")
    assert code == 0 and [json.loads(line)["label"] for line in stdout.splitlines()] == ["sorted", "unsorted"]
    _a_run_written_before_changes_opens_as_the_same_model(work / "cls-lora", work / "cls-lora-old")


def _a_run_written_before_changes_opens_as_the_same_model(run_dir, old_dir):
    """The run rewritten as earlier versions wrote it (head and adapter in [finetune], with
    `merged`; no `changes`) opens as the same model."""
    import shutil
    import tomllib

    import tomli_w

    from corekit.plugins import get_registry
    from corekit.run import Run

    shutil.copytree(run_dir, old_dir)
    data = tomllib.loads((old_dir / "spec.toml").read_text())
    assert [next(iter(c)) for c in data.pop("changes")] == ["head", "adapter"]
    data["finetune"]["merged"] = False
    (old_dir / "spec.toml").write_text(tomli_w.dumps(data))
    registry = get_registry()
    new, old = Run.open(run_dir, registry), Run.open(old_dir, registry)
    assert old.spec.changes == new.spec.changes and old.head == new.head
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        assert torch.equal(old.model().eval()(ids), new.model().eval()(ids))


def test_adapter_file_is_small_on_the_tiny_model(work, registry):
    """Rank-8 LoRA on examples/tiny.toml's model: the adapter file (head and metadata included)
    is under 5% of the base weights file."""
    from pathlib import Path

    from corekit.assemble import build_model, build_tokenizer
    from corekit.rundir import RunDir
    from corekit.spec import load_spec
    from corekit.weights import save_weights

    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "tiny.toml", registry=registry)
    base = RunDir(work / "tiny-base")
    base.path.mkdir()
    base.write_spec(spec)
    build_tokenizer(spec, registry).save(base.tokenizer)
    save_weights(build_model(spec, registry), spec, registry, base.path / "model.safetensors")
    data = sorted_digits_csv(work / "sorted-small.csv", n=40)
    ft = finetune_spec(work / "tiny-lora.toml", base.path, "classify", data, steps=2, batch_size=8,
                       extra='adapter = "lora"')
    files = _finetune(ft, work / "tiny-lora")["files"]
    ratio = files["adapter_bytes"] / files["base_weights_bytes"]
    print(f"adapter file / base weights: {ratio:.2%}")
    assert ratio < 0.05


# --------------------------------------------------------------------------- DPO
@pytest.mark.parametrize("adapter", [False, True], ids=["full", "lora"])
def test_dpo_raises_preference_accuracy(trained_run, work, adapter):
    data = work / "prefs.jsonl"
    if not data.exists():
        shouting_preferences(data)
    extra = ('[finetune.template]\nname = "chatml"' if not adapter
             else 'adapter = "lora"\n[finetune.template]\nname = "chatml"')
    spec = finetune_spec(work / f"dpo-{adapter}.toml", trained_run, "preference", data, steps=40,
                         lr=1e-3 if not adapter else 1e-2, batch_size=16, extra=extra)
    report = _finetune(spec, work / f"dpo-{adapter}")
    before, after = report["before"], report["after"]
    assert before["reward_margin"] == 0.0 and before["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert before["logprob_accuracy"] <= 0.2  # the base model prefers the lowercase answer
    assert after["preference_accuracy"] >= 0.9 and after["logprob_accuracy"] >= 0.9
    assert after["reward_margin"] > 1.0 and after["dpo_loss"] < 0.3
