"""Fine-tuning's parts against hand computations: the DPO loss, response-only loss masks,
added tokens, vocabulary growth, pooling; and the errors malformed data gets."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from corekit.finetune.tasks import (
    IGNORE, TokenExample, collate_lm, collate_preference, dpo_loss, encode_segments, lm_pair, response_loss,
    sequence_logprobs,
)
from corekit.finetune.template import Segment
from helpers import run_cli


# --------------------------------------------------------------------------- DPO
def test_dpo_loss_equals_the_hand_computation():
    # two pairs, summed response log-probabilities of the policy and of the reference
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -2.5])
    beta = 0.5
    result = dpo_loss(pc, pr, rc, rr, beta)
    # pair 0: beta*((-3+3.5) - (-4+3)) = 0.5*(0.5+1) = 0.75; pair 1: 0.5*((-5+4) - (-2+2.5)) = 0.5*(-1.5) = -0.75
    expected = (-math.log(1 / (1 + math.exp(-0.75))) - math.log(1 / (1 + math.exp(0.75)))) / 2
    assert result.loss.item() == pytest.approx(expected, rel=1e-6)
    assert result.chosen_rewards.tolist() == pytest.approx([0.25, -0.5])
    assert result.rejected_rewards.tolist() == pytest.approx([-0.5, 0.25])
    assert result.accuracy.item() == 0.5 and result.margin.item() == pytest.approx(0.0)


def test_sequence_logprobs_sum_only_counted_targets():
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [2.0, 1.0, 1.0]]])  # (1, 3, 3)
    targets = torch.tensor([[IGNORE, 2, 0]])

    def logp(row, i):
        values = logits[0, row].tolist()
        return values[i] - math.log(sum(math.exp(v) for v in values))

    assert sequence_logprobs(logits, targets).item() == pytest.approx(logp(1, 2) + logp(2, 0), rel=1e-6)


def test_dpo_batch_keeps_chosen_rows_first():
    chosen = TokenExample([1, 2, 3, 4], [False, False, True, True])
    rejected = TokenExample([1, 2, 5], [False, False, True])
    inputs, targets = collate_preference([(chosen, rejected)])
    assert inputs.tolist() == [[1, 2, 3], [1, 2, 0]]
    assert targets.tolist() == [[IGNORE, 3, 4], [IGNORE, 5, IGNORE]]


def test_adapter_reference_is_the_base_model_in_eval_mode(registry):
    """With LoRA, DPO's reference is the model with the adapter off: the base model's log-probs,
    deterministic (no dropout) however the adapter has moved and whatever mode training is in."""
    from corekit.finetune.tasks import PreferenceTask
    from corekit.spec import load_spec
    from helpers import model_section, tiny_model

    spec = load_spec({"model": model_section(vocab_size=300, dropout=0.3)}, registry=registry)
    base = tiny_model(registry, dropout=0.3)
    model = tiny_model(registry, dropout=0.3)
    adapter = registry.build("adapter", registry.get("adapter", "lora").params(dropout=0.5))
    adapter.apply(model)
    task = PreferenceTask(model, spec, registry, 0.1, adapter=adapter)
    inputs, targets = collate_lm([TokenExample([3, 4, 5, 6, 7], [False, False, True, True, True])])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_()
        expected = sequence_logprobs(base.eval()(inputs), targets)
    model.train()
    for _ in range(2):
        assert torch.equal(task.reference_logprobs(inputs, targets), expected)
    assert model.training  # the mode it was in is restored
    assert not torch.allclose(sequence_logprobs(model.eval()(inputs), targets), expected)


# --------------------------------------------------------------------------- response-only loss
class _Chars:
    """A one-id-per-character tokenizer (ids = code points) for mask checks."""

    def encode(self, text):
        return [ord(c) for c in text]


def test_loss_mask_covers_exactly_the_response():
    segments = [Segment("Q: ab\nA: ", False), Segment("xy!", True)]
    example = encode_segments(_Chars(), segments, 100)
    inputs, targets = lm_pair(example)
    assert inputs == [ord(c) for c in "Q: ab\nA: xy"]
    # a target counts when the token it predicts is a response token
    assert targets == [IGNORE] * 8 + [ord("x"), ord("y"), ord("!")]


def test_prompt_tokens_contribute_nothing_to_loss_or_gradient():
    torch.manual_seed(0)
    a = TokenExample([5, 6, 7, 8, 9], [False, False, False, True, True])
    b = TokenExample([1, 2, 3], [False, True, True])
    inputs, targets = collate_lm([a, b])
    logits = torch.randn(*inputs.shape, 12, requires_grad=True)
    loss = response_loss(logits, targets)
    loss.backward()
    counted = targets != IGNORE
    assert counted.tolist() == [[False, False, True, True], [True, True, False, False]]
    grad_rows = logits.grad.abs().sum(-1)
    assert torch.all(grad_rows[~counted] == 0) and torch.all(grad_rows[counted] > 0)
    # the same as the mean cross-entropy over the response positions alone
    picked = logits[counted]
    assert loss.item() == pytest.approx(F.cross_entropy(picked, targets[counted]).item(), rel=1e-6)
    # changing a prompt token's logits changes nothing
    with torch.no_grad():
        other = logits.detach().clone()
        other[0, 0] += 100
        assert response_loss(other, targets).item() == pytest.approx(loss.item(), rel=1e-6)


def test_prompt_gradient_through_a_model(registry):
    """Through a real decoder: the loss gradient reaches the logits only at response positions."""
    from helpers import tiny_model

    model = tiny_model(registry)
    example = TokenExample(list(range(10, 22)), [False] * 7 + [True] * 5)
    inputs, targets = collate_lm([example])
    captured = {}

    def keep(module, args, out):
        out.retain_grad()
        captured["logits"] = out

    model.lm_head.register_forward_hook(keep)
    loss = response_loss(model(inputs), targets)
    loss.backward()
    grad = captured["logits"].grad[0].abs().sum(-1)
    assert torch.all(grad[:6] == 0) and torch.all(grad[6:] > 0)


def test_examples_with_no_response_left_are_dropped():
    segments = [Segment("a" * 50, False), Segment("b", True)]
    assert encode_segments(_Chars(), segments, 40) is None
    assert encode_segments(_Chars(), segments, 51) is not None


# --------------------------------------------------------------------------- tokenizer and model surgery
def test_added_tokens_follow_the_vocabulary_and_export(registry):
    from tokenizers import Tokenizer as HF

    from corekit.tokenizer import AddedTokens

    base = registry.build("tokenizer", registry.get("tokenizer", "bytes").params())
    tok = AddedTokens(base, ["<|im_start|>", "<|im_end|>"])
    assert tok.vocab_size == 259 and tok.special_tokens["<|im_end|>"] == 258 and tok.eot_id == 256
    text = "<|im_start|>user\nhé<|im_end|><|endoftext|>"
    ids = tok.encode(text)
    assert ids[0] == 257 and ids[-2:] == [258, 256] and tok.decode(ids) == text
    assert tok.encode(text, allow_special=False) == list(text.encode())
    hf = HF.from_str(tok.edge_json())
    assert hf.encode(text).ids == ids and hf.decode(ids, skip_special_tokens=False) == text
    with pytest.raises(ValueError):
        tok.decode([259])


def test_resize_vocab_keeps_rows_and_ties(registry):
    from corekit.finetune.model import init_new_rows, resize_vocab, train_rows
    from helpers import tiny_model

    model = tiny_model(registry)
    old_table = model.tok_emb.weight.detach().clone()
    old = resize_vocab(model, old_table.shape[0] + 3)
    table = model.tok_emb.weight
    assert old == old_table.shape[0] and table.shape[0] == old + 3 and model.vocab_size == old + 3
    assert torch.equal(table[:old], old_table)
    assert model.lm_head.weight is table
    # tokens that land inside the old table (padding rows) are new too: rows old-2 .. old+1
    init_new_rows(model, old - 2, old + 2)
    assert torch.allclose(table[old - 2:old + 2], old_table[:old - 2].mean(0).expand(4, -1))
    model.requires_grad_(False)
    train_rows(table, old - 2, old + 2)
    model(torch.tensor([[1, old + 1, old - 1, 2]])).sum().backward()
    grad = table.grad.abs().sum(-1)
    assert torch.all(grad[:old - 2] == 0) and torch.all(grad[old + 2:] == 0) and torch.all(grad[old - 2:old + 2] > 0)


def test_row_masked_tables_skip_weight_decay(registry):
    """An untied head is in AdamW's decay group; its frozen rows must not shrink."""
    from corekit.finetune.model import init_new_rows, resize_vocab, train_rows
    from corekit.finetune.tasks import InstructTask
    from corekit.spec import load_spec
    from helpers import model_section, tiny_model

    spec = load_spec({"model": model_section(vocab_size=300, tie_embeddings=False),
                      "train": {"optimizer": {"name": "adamw", "lr": 0.1, "weight_decay": 0.5}}}, registry=registry)
    model = tiny_model(registry, tie_embeddings=False).train()
    old = resize_vocab(model, model.vocab_size + 2)
    tables = init_new_rows(model, old, old + 2)
    assert [k for k, _ in tables] == ["tok_emb.weight", "lm_head.weight"]
    model.requires_grad_(False)
    for _, table in tables:
        train_rows(table, old, old + 2)
    before = {k: t.detach().clone() for k, t in tables}
    task = InstructTask(model, spec, registry)
    task.no_decay = [t for _, t in tables]
    optimizer = task.configure_optimizers()["optimizer"]
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups if any(p is tables[1][1] for p in g["params"]))
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.tensor([[1, old, old + 1, 3]])).logsumexp(-1).sum().backward()
        optimizer.step()
    for key, table in tables:
        assert torch.equal(table[:old], before[key][:old]), key
        assert not torch.equal(table[old:], before[key][old:]), key


def test_rows_from_files_rebuild_a_table(tmp_path, registry):
    from safetensors.torch import save_file

    from corekit.weights import load_weights
    from helpers import tiny_model

    model = tiny_model(registry)
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    full = state["tok_emb.weight"].clone()
    state["tok_emb.weight"] = full[:-5]
    save_file(state, tmp_path / "base.safetensors")
    save_file({"tok_emb.weight.rows_from.40": full[40:] + 1}, tmp_path / "rows.safetensors")
    fresh = tiny_model(registry, seed=1)
    load_weights(fresh, tmp_path / "base.safetensors", tmp_path / "rows.safetensors")
    assert torch.equal(fresh.tok_emb.weight[:40], full[:40]) and torch.equal(fresh.tok_emb.weight[40:], full[40:] + 1)


def test_pooling_last_and_mean():
    from corekit.finetune.model import pool

    logits = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    lengths = torch.tensor([2, 4])
    assert torch.equal(pool(logits, lengths, "last"), torch.stack([logits[0, 1], logits[1, 3]]))
    assert torch.allclose(pool(logits, lengths, "mean"), torch.stack([logits[0, :2].mean(0), logits[1].mean(0)]))


# --------------------------------------------------------------------------- malformed input
@pytest.fixture
def spec_for(tmp_path, trained_run):
    from finetune_data import finetune_spec

    def make(task, data, extra=""):
        return finetune_spec(tmp_path / "ft.toml", trained_run, task, data, steps=2, extra=extra)

    return make


def _fails(capsys, spec, out, *fragments):
    code, _, err = run_cli(capsys, "finetune", str(spec), "--run-dir", str(out), "-q")
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in " ".join(err.split()), err
    assert not out.exists()
    return err


def test_missing_field_names_file_and_line(tmp_path, spec_for, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c"}\n', encoding="utf-8")
    _fails(capsys, spec_for("instruct", data), tmp_path / "out", f"{data}:3", "missing field 'output'")


def test_bad_json_line_and_bad_messages(tmp_path, spec_for, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n', encoding="utf-8")
    _fails(capsys, spec_for("instruct", data), tmp_path / "out", f"{data}:2", "invalid JSON")
    good = '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    data.write_text(good * 2 + good.replace("assistant", "bot"), encoding="utf-8")
    _fails(capsys, spec_for("instruct", data), tmp_path / "out", f"{data}:3", "messages[1]", "'role'")


def test_empty_file(tmp_path, spec_for, capsys):
    data = tmp_path / "d.csv"
    data.write_text("", encoding="utf-8")
    _fails(capsys, spec_for("classify", data), tmp_path / "out", f"{data}", "holds no examples")


def test_csv_row_with_wrong_cells(tmp_path, spec_for, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n123,sorted\n3,2,1,unsorted\n", encoding="utf-8")
    _fails(capsys, spec_for("classify", data), tmp_path / "out", f"{data}:3", "4 cells")


def test_unknown_label_in_validation_data(tmp_path, spec_for, capsys):
    from finetune_data import sorted_digits_csv

    train = sorted_digits_csv(tmp_path / "train.csv", n=40)
    val = tmp_path / "val.csv"
    val.write_text("text,label\n123,sorted\n321,maybe\n", encoding="utf-8")
    spec = spec_for("classify", train)
    spec.write_text(spec.read_text().replace(f'train = "{train}"', f'train = "{train}"\nval = "{val}"'))
    _fails(capsys, spec, tmp_path / "out", f"{val}:3", "label 'maybe'", "'sorted', 'unsorted'")


def test_unknown_label_at_eval(tmp_path, spec_for, capsys):
    from finetune_data import sorted_digits_csv

    train = sorted_digits_csv(tmp_path / "train.csv", n=40)
    out = tmp_path / "cls"
    code, _, err = run_cli(capsys, "finetune", str(spec_for("classify", train)), "--run-dir", str(out), "-q")
    assert code == 0, err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "12", "label": "sorted"}) + "\n" + json.dumps({"text": "1", "label": 7}) + "\n")
    code, _, err = run_cli(capsys, "eval", str(out), "--data", str(bad))
    assert code == 2 and f"{bad}:2" in err and "label '7'" in err and "Traceback" not in err


def test_unknown_template_names_spec_file_and_line(tmp_path, spec_for, capsys):
    from finetune_data import counting_jsonl

    data = counting_jsonl(tmp_path / "c.jsonl", n=10)
    spec = spec_for("instruct", data, extra='[finetune.template]\nname = "vicuna"')
    line = spec.read_text().splitlines().index('name = "vicuna"') + 1
    _fails(capsys, spec, tmp_path / "out", str(spec), "finetune.template.name", f"line {line}", "alpaca", "chatml")


def test_spec_mistakes(tmp_path, spec_for, capsys, trained_run):
    from finetune_data import counting_jsonl

    data = counting_jsonl(tmp_path / "c.jsonl", n=10)
    spec = spec_for("instruct", data)
    spec.write_text(spec.read_text() + "\n[model]\nd_model = 32\n")
    _fails(capsys, spec, tmp_path / "out", "section 'model' comes from the base run")
    spec = spec_for("instruct", data)
    spec.write_text(spec.read_text().replace(str(trained_run), str(tmp_path / "nowhere")))
    _fails(capsys, spec, tmp_path / "out", "is not a trained run")
    spec = spec_for("translate", data)
    _fails(capsys, spec, tmp_path / "out", "finetune.task", "line 3", "classify")
    missing = spec_for("instruct", tmp_path / "absent.jsonl")
    _fails(capsys, missing, tmp_path / "out", f"{tmp_path / 'absent.jsonl'}: no such file")


def test_head_mistakes_are_spec_errors_with_their_line(tmp_path, spec_for, capsys):
    from finetune_data import counting_jsonl, sorted_digits_csv

    train = sorted_digits_csv(tmp_path / "train.csv", n=40)
    spec = spec_for("classify", train, extra='head = "nope"')
    line = spec.read_text().splitlines().index('head = "nope"') + 1
    _fails(capsys, spec, tmp_path / "out", "finetune.head.name", f"line {line}", "unknown head 'nope'", "classifier")
    spec = spec_for("classify", train, extra='head = { name = "classifier", width = 3 }')
    _fails(capsys, spec, tmp_path / "out", "finetune.head.width", "unknown field 'width'", "allowed: name, labels")
    spec = spec_for("classify", train, extra='head = { name = "classifier", labels = ["a", "b"] }')
    _fails(capsys, spec, tmp_path / "out", "finetune.head.labels", "set labels in [finetune] itself")
    spec = spec_for("instruct", counting_jsonl(tmp_path / "c.jsonl", n=10), extra='head = "classifier2"')
    _fails(capsys, spec, tmp_path / "out", "finetune.head", "task = 'classify'")
    # `merged` belonged to run directories of earlier versions: in a fine-tuning spec it would be
    # read as such a run's record of its adapter
    spec = spec_for("classify", train, extra='adapter = "lora"\nmerged = false')
    _fails(capsys, spec, tmp_path / "out", "finetune.merged", "not a field of a fine-tuning spec")


def test_a_failed_finetune_leaves_an_earlier_result(tmp_path, spec_for, capsys):
    from finetune_data import sorted_digits_csv

    train = sorted_digits_csv(tmp_path / "train.csv", n=40)
    out = tmp_path / "cls"
    assert run_cli(capsys, "finetune", str(spec_for("classify", train)), "--run-dir", str(out), "-q")[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    train.write_text("text,label\n")
    code, _, err = run_cli(capsys, "finetune", str(tmp_path / "ft.toml"), "--run-dir", str(out), "-q")
    assert code == 2 and "holds no examples" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cls")]
