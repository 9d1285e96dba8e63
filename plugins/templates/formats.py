"""Prompt formats: ``alpaca`` (Stanford Alpaca, Taori et al. 2023,
https://github.com/tatsu-lab/stanford_alpaca) and ``chatml`` (OpenAI's Chat Markup Language,
``<|im_start|>`` / ``<|im_end|>`` turns)."""

from __future__ import annotations

from collections.abc import Sequence

from corekit.finetune.template import ROLES, Segment, Template, TemplateError
from corekit_plugins.templates import AlpacaParams, ChatMLParams


def _checked(messages: Sequence[dict], fmt: str, hint: str = "") -> list[dict]:
    """``messages`` as a list, after checking each is a message dict.

    Raises:
        TemplateError: ``"{fmt}: ..."`` naming the first bad message's index and problem, then ``hint``.
    """
    try:
        return _check(messages)
    except TemplateError as e:
        raise TemplateError(f"{fmt}: {e}{hint}") from None


def _check(messages: Sequence[dict]) -> list[dict]:
    """:func:`_checked` without the prefix."""
    if isinstance(messages, (str, bytes, dict)):
        raise TemplateError(f"messages must be a list of message dicts, got {type(messages).__name__}")
    out = list(messages)
    for i, m in enumerate(out):
        if not isinstance(m, dict):
            raise TemplateError(f"message {i}: expected a dict with 'role' and 'content', got {type(m).__name__}")
        if m.get("role") not in ROLES:
            raise TemplateError(f"message {i}: unknown role {m.get('role')!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            got = "missing" if "content" not in m else type(m["content"]).__name__
            raise TemplateError(f"message {i} ({m['role']}): 'content' must be a string, got {got}")
        extra = m.get("input")
        if extra is not None and not isinstance(extra, str):
            raise TemplateError(f"message {i} ({m['role']}): 'input' must be a string, got {type(extra).__name__}")
        if extra and m["role"] != "user":
            raise TemplateError(f"message {i} ({m['role']}): only a user message may carry 'input'")
    return out


class Alpaca(Template):
    """Stanford Alpaca: one instruction (with an optional input) and one response.

    The rendered text, with ``P`` the preamble, ``I`` the instruction (the user message's
    content), ``X`` its ``input`` and ``R`` the response (the assistant message's content)::

        no input:   "{P}\\n\\n### Instruction:\\n{I}\\n\\n### Response:\\n" + "{R}<|endoftext|>"
        with input: "{P}\\n\\n### Instruction:\\n{I}\\n\\n### Input:\\n{X}\\n\\n### Response:\\n" + "{R}<|endoftext|>"

    Only ``"{R}<|endoftext|>"`` is trained. With an empty preamble the leading ``"{P}\\n\\n"``
    is dropped. ``P`` is a system message's content when there is one, else
    ``params.system`` when not None, else Alpaca's own:

    - no input: ``"Below is an instruction that describes a task. Write a response that
      appropriately completes the request."``
    - with input: ``"Below is an instruction that describes a task, paired with an input that
      provides further context. Write a response that appropriately completes the request."``
    """

    special_tokens = ("<|endoftext|>",)
    stop = "<|endoftext|>"
    HINT = "; alpaca renders one instruction and one response (use the 'chatml' template for conversations)"
    PREAMBLE = ("Below is an instruction that describes a task. "
                "Write a response that appropriately completes the request.")
    PREAMBLE_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                      "further context. Write a response that appropriately completes the request.")

    def __init__(self, system: str | None = None) -> None:
        self.system = system

    def _prompt_text(self, messages: Sequence[dict], reply: bool) -> tuple[str, str | None]:
        """The prompt text and the response (None when ``reply`` is False)."""
        msgs = _checked(messages, "alpaca", self.HINT)
        roles = [m["role"] for m in msgs]
        want = ["user", "assistant"] if reply else ["user"]
        if roles not in (want, ["system", *want]):
            shape = "[system,] user, assistant" if reply else "[system,] user"
            raise TemplateError(f"alpaca: expected roles {shape}, got [{', '.join(roles) or 'no messages'}]{self.HINT}")
        user = msgs[roles.index("user")]
        extra = user.get("input") or ""
        if roles[0] == "system":
            preamble = msgs[0]["content"]
        elif self.system is not None:
            preamble = self.system
        else:
            preamble = self.PREAMBLE_INPUT if extra else self.PREAMBLE
        text = f"### Instruction:\n{user['content']}\n\n"
        if extra:
            text += f"### Input:\n{extra}\n\n"
        text += "### Response:\n"
        if preamble:
            text = f"{preamble}\n\n{text}"
        return text, (msgs[-1]["content"] if reply else None)

    def render(self, messages: Sequence[dict]) -> list[Segment]:
        """``[prompt text (not trained), response + "<|endoftext|>" (trained)]``."""
        text, response = self._prompt_text(messages, reply=True)
        return [Segment(text, False), Segment(f"{response}{self.stop}", True)]

    def prompt(self, messages: Sequence[dict]) -> str:
        """The prompt text for ``[system,] user``, ending with ``"### Response:\\n"``."""
        return self._prompt_text(messages, reply=False)[0]


class ChatML(Template):
    """OpenAI ChatML: any number of alternating user/assistant turns, after an optional system one.

    Each message renders as ``"<|im_start|>{role}\\n{content}<|im_end|>\\n"``; a user message's
    ``input``, when non-empty, is appended to its content as ``content + "\\n\\n" + input``.
    When the conversation has no system message and ``params.system`` is not None, a system
    message with it comes first. Only each assistant ``"{content}<|im_end|>"`` is trained (its
    ``"<|im_start|>assistant\\n"`` header and the trailing ``"\\n"`` are not).
    :meth:`prompt` is the rendering of the messages plus ``"<|im_start|>assistant\\n"``.
    """

    special_tokens = ("<|im_start|>", "<|im_end|>")
    stop = "<|im_end|>"

    def __init__(self, system: str | None = None) -> None:
        self.system = system

    def _turns(self, messages: Sequence[dict], last: str) -> list[tuple[str, str]]:
        """``(role, content)`` pairs, checked for order and ending with role ``last``."""
        msgs = _checked(messages, "chatml")
        if not msgs:
            raise TemplateError(f"chatml: no messages; the last message's role must be {last!r}")
        expect = "user"
        for i, m in enumerate(msgs):
            if m["role"] == "system":
                if i:
                    raise TemplateError(f"chatml: message {i} is a system message; "
                                        "a system message is allowed only first")
                continue
            if m["role"] != expect:
                raise TemplateError(f"chatml: message {i} is {m['role']!r}, expected {expect!r}; "
                                    "after an optional system message roles alternate user, assistant")
            expect = "assistant" if expect == "user" else "user"
        if msgs[-1]["role"] != last:
            raise TemplateError(f"chatml: the last message's role must be {last!r}, got {msgs[-1]['role']!r}")
        turns = [(m["role"], m["content"] + (f"\n\n{m['input']}" if m.get("input") else "")) for m in msgs]
        if msgs[0]["role"] != "system" and self.system is not None:
            turns.insert(0, ("system", self.system))
        return turns

    def render(self, messages: Sequence[dict]) -> list[Segment]:
        """Segments alternating untrained text and trained ``"{reply}<|im_end|>"``."""
        segments: list[Segment] = []
        pending = ""
        for role, content in self._turns(messages, "assistant"):
            if role == "assistant":
                segments += [Segment(pending + "<|im_start|>assistant\n", False), Segment(content + self.stop, True)]
                pending = "\n"
            else:
                pending += f"<|im_start|>{role}\n{content}{self.stop}\n"
        if pending:
            segments.append(Segment(pending, False))
        return segments

    def prompt(self, messages: Sequence[dict]) -> str:
        """The messages rendered, then ``"<|im_start|>assistant\\n"``."""
        turns = self._turns(messages, "user")
        return "".join(f"<|im_start|>{r}\n{c}{self.stop}\n" for r, c in turns) + "<|im_start|>assistant\n"


def build_alpaca(params: AlpacaParams) -> Alpaca:
    """The ``alpaca`` template."""
    return Alpaca(system=params.system)


def build_chatml(params: ChatMLParams) -> ChatML:
    """The ``chatml`` template."""
    return ChatML(system=params.system)
