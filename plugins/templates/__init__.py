"""Prompt templates (kind ``template``) for instruction tuning:

- ``alpaca``: the Stanford Alpaca format (Taori et al. 2023), one instruction, an optional
  input, one response ended by ``<|endoftext|>``.
- ``chatml``: OpenAI's ChatML, ``<|im_start|>role\\n...<|im_end|>`` turns, any number of them.

The exact strings are documented on each class in :mod:`corekit_plugins.templates.formats`
and in the README.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corekit import hookimpl
from corekit.params import Params

BUILD = "corekit_plugins.templates.formats:"


class AlpacaParams(Params):
    """Alpaca: ``### Instruction:`` / ``### Input:`` / ``### Response:`` sections after a preamble."""

    name: Literal["alpaca"] = "alpaca"
    system: str | None = Field(
        None,
        description="the preamble line(s) before '### Instruction:' (None: Alpaca's own two preambles, with and "
                    "without input; '': none). A system message in the data takes its place",
    )


class ChatMLParams(Params):
    """ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` for each message."""

    name: Literal["chatml"] = "chatml"
    system: str | None = Field(
        None, description="a system message put first when the data has none (None: no system turn)"
    )


@hookimpl
def corekit_register_components(registry):
    registry.add("template", AlpacaParams, BUILD + "build_alpaca")
    registry.add("template", ChatMLParams, BUILD + "build_chatml")
