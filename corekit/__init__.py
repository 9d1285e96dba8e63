"""corekit: compose, train, compress and ship GPT-style language models from plugins.

The public API is re-exported here. Everything except :data:`hookimpl` is imported
lazily, so ``import corekit`` (and plugin discovery) never pulls in torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from corekit.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "Params": "corekit.params",
    "AttentionParams": "corekit.params",
    "TokenizerParams": "corekit.params",
    "ModelContext": "corekit.params",
    "Slot": "corekit.params",
    "Registry": "corekit.registry",
    "Component": "corekit.registry",
    "get_registry": "corekit.plugins",
    "load_registry": "corekit.plugins",
    "load_spec": "corekit.spec",
    "RunSpec": "corekit.spec",
    "ModelSpec": "corekit.spec",
    "build_model": "corekit.assemble",
    "build_tokenizer": "corekit.assemble",
    "generate": "corekit.generation",
    "CorekitError": "corekit.errors",
    "SpecError": "corekit.errors",
}

__all__ = ["hookimpl", "__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    # `name as name` marks these as explicit re-exports (for type checkers and linters);
    # at run time they are served lazily by __getattr__ below.
    from corekit.assemble import build_model as build_model, build_tokenizer as build_tokenizer
    from corekit.errors import CorekitError as CorekitError, SpecError as SpecError
    from corekit.generation import generate as generate
    from corekit.params import (
        AttentionParams as AttentionParams,
        ModelContext as ModelContext,
        Params as Params,
        Slot as Slot,
        TokenizerParams as TokenizerParams,
    )
    from corekit.plugins import get_registry as get_registry, load_registry as load_registry
    from corekit.registry import Component as Component, Registry as Registry
    from corekit.spec import ModelSpec as ModelSpec, RunSpec as RunSpec, load_spec as load_spec


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corekit' has no attribute {name!r}")
    return getattr(import_module(module), name)
