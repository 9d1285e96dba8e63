"""Prompt templates: the interface of ``template`` components (kind ``template``).

A template turns a conversation into text for instruction tuning. A conversation is a list
of messages ``{"role": "system" | "user" | "assistant", "content": str}``; a user message
may also carry ``"input"`` (the Alpaca record's optional input field). :meth:`Template.render`
cuts the whole conversation into :class:`Segment` s, marking the ones the loss is computed
on (the assistant replies with the token that ends them); :meth:`Template.prompt` gives the
text a model continues to write the next assistant reply. Special tokens a template uses
are added to a run's tokenizer when missing (its embeddings grow to match).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

from corekit.errors import CorekitError

ROLES = ("system", "user", "assistant")


class TemplateError(CorekitError):
    """A conversation this template cannot render (the message says why)."""


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text; ``train`` marks response text the loss is computed on."""

    text: str
    train: bool = False


class Template(ABC):
    """Conversation -> text, for one prompt format."""

    #: special tokens the template's text contains (added to the tokenizer when missing)
    special_tokens: tuple[str, ...] = ()
    #: the string that ends an assistant reply; generation stops at it
    stop: str = "<|endoftext|>"

    @abstractmethod
    def render(self, messages: Sequence[dict]) -> list[Segment]:
        """The whole conversation (ending with an assistant reply) as segments; each assistant
        reply, followed by :attr:`stop`, is a ``train=True`` segment.

        Raises:
            TemplateError: roles out of order, or a shape this template does not support.
        """

    @abstractmethod
    def prompt(self, messages: Sequence[dict]) -> str:
        """The text a model continues to write the reply to ``messages`` (ending with a user
        message): the rendering of those messages up to where the reply begins.

        Raises:
            TemplateError: as :meth:`render`.
        """

    def text(self, messages: Sequence[dict]) -> str:
        """:meth:`render` joined into one string."""
        return "".join(s.text for s in self.render(messages))
