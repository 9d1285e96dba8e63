"""Template plugins ``alpaca`` and ``chatml``: the exact strings, the train mask, errors."""

from __future__ import annotations

from itertools import pairwise

import pytest

from corekit.errors import CorekitError, UnknownComponentError
from corekit.finetune.template import Segment, Template, TemplateError

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")
ALPACA_PREAMBLE_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                         "further context. Write a response that appropriately completes the request.")


def user(content, **kw):
    return {"role": "user", "content": content, **kw}


def assistant(content):
    return {"role": "assistant", "content": content}


def system(content):
    return {"role": "system", "content": content}


def mask(segments: list[Segment]) -> str:
    """One character per rendered character: '1' trained, '0' not."""
    return "".join(("1" if s.train else "0") * len(s.text) for s in segments)


def expected_mask(pieces: list[tuple[str, bool]]) -> str:
    return "".join(("1" if t else "0") * len(text) for text, t in pieces)


@pytest.fixture
def alpaca(registry):
    return registry.build("template", "alpaca")


@pytest.fixture
def chatml(registry):
    return registry.build("template", "chatml")


# ------------------------------------------------------------------ registry
def test_registered_and_built_through_registry(registry):
    from corekit_plugins.templates.formats import Alpaca, ChatML

    assert {"alpaca", "chatml"} <= set(registry.names("template"))
    a = registry.build("template", registry.get("template", "alpaca").params())
    c = registry.build("template", registry.get("template", "chatml").params(system="Be brief."))
    assert isinstance(a, Alpaca) and isinstance(a, Template)
    assert isinstance(c, ChatML) and isinstance(c, Template)
    assert (a.special_tokens, a.stop) == (("<|endoftext|>",), "<|endoftext|>")
    assert (c.special_tokens, c.stop) == (("<|im_start|>", "<|im_end|>"), "<|im_end|>")
    assert c.prompt([user("x")]).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_unknown_template_lists_available(registry):
    with pytest.raises(UnknownComponentError) as e:
        registry.get("template", "nope")
    assert "alpaca" in str(e.value) and "chatml" in str(e.value)


def test_template_error_is_corekit_error():
    assert issubclass(TemplateError, CorekitError)


# ------------------------------------------------------------------ alpaca
def test_alpaca_without_input(alpaca):
    msgs = [user("Name a {colour}."), assistant("Blue.")]
    prompt = ("Below is an instruction that describes a task. Write a response that appropriately completes "
              "the request.\n\n### Instruction:\nName a {colour}.\n\n### Response:\n")
    assert alpaca.render(msgs) == [Segment(prompt, False), Segment("Blue.<|endoftext|>", True)]
    assert alpaca.text(msgs) == prompt + "Blue.<|endoftext|>"
    assert alpaca.prompt(msgs[:-1]) == prompt


def test_alpaca_with_input(alpaca):
    msgs = [user("Translate to French.", input="Good morning"), assistant("Bonjour")]
    prompt = ("Below is an instruction that describes a task, paired with an input that provides further "
              "context. Write a response that appropriately completes the request.\n\n"
              "### Instruction:\nTranslate to French.\n\n### Input:\nGood morning\n\n### Response:\n")
    assert alpaca.render(msgs) == [Segment(prompt, False), Segment("Bonjour<|endoftext|>", True)]
    assert alpaca.prompt(msgs[:-1]) == prompt


@pytest.mark.parametrize("empty", ["", None])
def test_alpaca_empty_input_is_absent(alpaca, empty):
    with_empty = [user("Say hi.", input=empty), assistant("hi")]
    assert alpaca.text(with_empty) == alpaca.text([user("Say hi."), assistant("hi")])
    assert "### Input:" not in alpaca.text(with_empty)
    assert alpaca.text(with_empty).startswith(ALPACA_PREAMBLE + "\n\n")


def test_alpaca_preamble_from_params(registry):
    tpl = registry.build("template", {"name": "alpaca", "system": "You are a poet."})
    assert tpl.text([user("Write."), assistant("Roses.")]) == (
        "You are a poet.\n\n### Instruction:\nWrite.\n\n### Response:\nRoses.<|endoftext|>")
    # the override replaces both of Alpaca's preambles
    assert tpl.prompt([user("Write.", input="about rain")]) == (
        "You are a poet.\n\n### Instruction:\nWrite.\n\n### Input:\nabout rain\n\n### Response:\n")


def test_alpaca_empty_preamble_drops_leading_block(registry):
    tpl = registry.build("template", {"name": "alpaca", "system": ""})
    assert tpl.text([user("Add 2 and 2."), assistant("4")]) == (
        "### Instruction:\nAdd 2 and 2.\n\n### Response:\n4<|endoftext|>")
    assert tpl.prompt([user("Add.", input="2, 2")]) == (
        "### Instruction:\nAdd.\n\n### Input:\n2, 2\n\n### Response:\n")


def test_alpaca_system_message_is_the_preamble(registry):
    tpl = registry.build("template", {"name": "alpaca", "system": "from params"})
    msgs = [system("from data"), user("Go."), assistant("Gone.")]
    assert tpl.render(msgs) == [Segment("from data\n\n### Instruction:\nGo.\n\n### Response:\n", False),
                                Segment("Gone.<|endoftext|>", True)]
    assert tpl.prompt(msgs[:-1]) == "from data\n\n### Instruction:\nGo.\n\n### Response:\n"
    assert tpl.prompt([system(""), user("Go.")]) == "### Instruction:\nGo.\n\n### Response:\n"


def test_alpaca_prompt_plus_reply_is_the_rendering(alpaca):
    for msgs in ([user("a"), assistant("b")], [system("s"), user("a", input="i"), assistant("b")]):
        assert alpaca.prompt(msgs[:-1]) + msgs[-1]["content"] + alpaca.stop == alpaca.text(msgs)
        assert mask(alpaca.render(msgs)) == "0" * len(alpaca.prompt(msgs[:-1])) + "1" * len("b<|endoftext|>")


@pytest.mark.parametrize("msgs, found", [
    ([user("a"), assistant("b"), user("c"), assistant("d")], "user, assistant, user, assistant"),
    ([assistant("b"), user("a")], "assistant, user"),
    ([user("a"), system("s"), assistant("b")], "user, system, assistant"),
    ([system("s"), system("t"), user("a"), assistant("b")], "system, system, user, assistant"),
    ([user("a")], "[user]"),
    ([], "no messages"),
    ([{"role": "tool", "content": "x"}, assistant("b")], "unknown role 'tool'"),
    ([{"role": "user"}, assistant("b")], "'content' must be a string, got missing"),
    ([user(["a"]), assistant("b")], "got list"),
    ([user("a"), "b"], "message 1"),
])
def test_alpaca_rejects_other_shapes(alpaca, msgs, found):
    with pytest.raises(TemplateError) as e:
        alpaca.render(msgs)
    msg = str(e.value)
    assert found in msg
    assert "alpaca renders one instruction and one response" in msg and "chatml" in msg


def test_alpaca_prompt_rejects_a_reply(alpaca):
    with pytest.raises(TemplateError, match="one instruction and one response"):
        alpaca.prompt([user("a"), assistant("b")])


# ------------------------------------------------------------------ chatml
def test_chatml_single_turn(chatml):
    msgs = [user("Hi"), assistant("Hello!")]
    assert chatml.text(msgs) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    assert [s for s in chatml.render(msgs) if s.train] == [Segment("Hello!<|im_end|>", True)]


def test_chatml_multi_turn_text_and_mask(chatml):
    msgs = [system("You are terse."), user("2+2?"), assistant("4"), user("And 3+3?"), assistant("6, {ok}")]
    pieces = [
        ("<|im_start|>system\nYou are terse.<|im_end|>\n", False),
        ("<|im_start|>user\n2+2?<|im_end|>\n", False),
        ("<|im_start|>assistant\n", False),
        ("4<|im_end|>", True),
        ("\n", False),
        ("<|im_start|>user\nAnd 3+3?<|im_end|>\n", False),
        ("<|im_start|>assistant\n", False),
        ("6, {ok}<|im_end|>", True),
        ("\n", False),
    ]
    segments = chatml.render(msgs)
    assert chatml.text(msgs) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n6, {ok}<|im_end|>\n")
    assert mask(segments) == expected_mask(pieces)
    assert [s.text for s in segments if s.train] == ["4<|im_end|>", "6, {ok}<|im_end|>"]
    # adjacent untrained text is merged, and no segment is empty
    assert all(s.text for s in segments)
    assert all(a.train or b.train for a, b in pairwise(segments))


def test_chatml_user_input_is_appended(chatml):
    msgs = [user("Summarise.", input="Long text."), assistant("Short.")]
    assert chatml.text(msgs) == ("<|im_start|>user\nSummarise.\n\nLong text.<|im_end|>\n"
                                 "<|im_start|>assistant\nShort.<|im_end|>\n")
    assert chatml.text([user("Q", input=""), assistant("A")]) == chatml.text([user("Q"), assistant("A")])


def test_chatml_default_system_from_params(registry):
    tpl = registry.build("template", {"name": "chatml", "system": "Be kind."})
    assert tpl.text([user("Hi"), assistant("Hey")]) == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHey<|im_end|>\n")
    # a system message in the data wins; params.system is not added as well
    assert tpl.text([system("Be stern."), user("Hi"), assistant("Hey")]) == (
        "<|im_start|>system\nBe stern.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHey<|im_end|>\n")
    assert "system" not in registry.build("template", "chatml").text([user("Hi"), assistant("Hey")])


def test_chatml_prompt(chatml):
    assert chatml.prompt([system("S"), user("Q")]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("system_param", [None, "Default."])
def test_chatml_prompt_plus_reply_is_the_rendering(registry, system_param):
    tpl = registry.build("template", {"name": "chatml", "system": system_param})
    msgs = [user("a", input="x"), assistant("b"), user("c"), assistant("d")]
    for k in (2, 4):  # every assistant reply
        conv = msgs[:k]
        rendered = tpl.text(conv)
        assert rendered == tpl.prompt(conv[:-1]) + conv[-1]["content"] + tpl.stop + "\n"
        assert rendered.startswith(tpl.prompt(conv[:-1]))


@pytest.mark.parametrize("msgs, method, found", [
    ([user("a"), system("s"), assistant("b")], "render", "message 1 is a system message"),
    ([user("a"), user("b"), assistant("c")], "render", "message 1 is 'user', expected 'assistant'"),
    ([assistant("b")], "render", "message 0 is 'assistant', expected 'user'"),
    ([system("s"), assistant("b")], "render", "message 1 is 'assistant', expected 'user'"),
    ([user("a"), assistant("b"), assistant("c")], "render", "message 2 is 'assistant', expected 'user'"),
    ([user("a")], "render", "last message's role must be 'assistant', got 'user'"),
    ([user("a"), assistant("b")], "prompt", "last message's role must be 'user', got 'assistant'"),
    ([], "render", "no messages"),
    ([user("a"), {"role": "bot", "content": "b"}], "render", "message 1: unknown role 'bot'"),
    ([user("a"), {"role": "assistant", "content": None}], "render", "message 1 (assistant): 'content' must"),
    ([user(3)], "prompt", "message 0 (user): 'content' must be a string, got int"),
    ([user("a", input=5)], "prompt", "message 0 (user): 'input' must be a string"),
    ([user("a"), {"role": "assistant", "content": "b", "input": "x"}], "render", "only a user message"),
    ([user("a"), None], "render", "message 1: expected a dict"),
])
def test_chatml_rejects_bad_conversations(chatml, msgs, method, found):
    with pytest.raises(TemplateError) as e:
        getattr(chatml, method)(msgs)
    assert found in str(e.value)
    assert str(e.value).startswith("chatml: ")
