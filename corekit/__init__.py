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
    from corekit.assemble import build_model, build_tokenizer
    from corekit.errors import CorekitError, SpecError
    from corekit.generation import generate
    from corekit.params import AttentionParams, ModelContext, Params, Slot, TokenizerParams
    from corekit.plugins import get_registry, load_registry
    from corekit.registry import Component, Registry
    from corekit.spec import ModelSpec, RunSpec, load_spec


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corekit' has no attribute {name!r}")
    return getattr(import_module(module), name)
