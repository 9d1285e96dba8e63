"""The hooks a corekit plugin may implement.

A plugin is any module or object with functions marked ``@corekit.hookimpl`` whose names
match the hook specifications below. Built-in plugins (listed in ``registry.toml``),
third-party packages (entry-point group ``corekit``) and local modules (a user's
``registry.toml``) are all registered with the same pluggy plugin manager.

Keep plugin modules cheap to import: define pydantic ``Params`` models at module level
and import torch only inside ``build`` functions, so that listing plugins stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from corekit.registry import Registry

PROJECT = "corekit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def corekit_register_components(registry: Registry) -> None:
    """Add this plugin's components to ``registry``.

    Called once per plugin, when the plugin is registered (a historic hook: plugins
    registered later are called too). Call ``registry.add(kind, params=..., build=...)``
    for each component; the component's name is the ``name`` literal of its Params model.

    Kinds and what their ``build`` receives and returns (see ``corekit.registry.KINDS``):

    - ``tokenizer``: ``build(params)`` -> a :class:`corekit.tokenizer.Tokenizer`.
    - ``attention``: ``build(params, ctx, kernel)`` -> ``nn.Module`` with
      ``forward(x, batch, cache)``; params subclass :class:`corekit.params.AttentionParams`.
    - ``attention_kernel``: ``build(params, ctx)`` -> ``nn.Module`` with
      ``forward(q, k, v, bias, is_causal, dropout_p)``.
    - ``norm``: ``build(params, ctx)`` -> ``nn.Module`` mapping ``(..., d_model)`` to itself.
    - ``activation``: ``build(params, ctx)`` -> ``nn.Module``; params subclass
      :class:`corekit.params.ActivationParams`, whose ``gated`` class attribute says
      whether the module takes twice the hidden width and halves it.
    - ``positional``: ``build(params, ctx)`` -> :class:`corekit.modules.positional.Positional`.
    - ``optimizer``: ``build(params, param_groups)`` -> ``torch.optim.Optimizer``.
    - ``scheduler``: ``build(params, optimizer, max_steps)`` -> an LR scheduler.
    - ``compressor``: ``build(params)`` -> a :class:`corekit.compress.base.Compressor` acting on a
      trained run (``check``, ``compress``, and ``restore`` for the structure of its saved weights).

    Not ``firstresult``; the return value is ignored.
    """


@hookspec
def corekit_trainer_callbacks(spec: Any) -> list[Any]:
    """Return Lightning callbacks to add to the trainer for the run ``spec``.

    Called once when a trainer is built, after plugins loaded; every plugin's list is
    concatenated. Return an empty list to add nothing.
    """


@hookspec(firstresult=True)
def corekit_prepare_export(model: Any, spec: Any) -> Any:
    """Return a module to export in place of ``model`` (e.g. with fast paths swapped out).

    Called before ONNX export. ``firstresult``: the first non-None result is exported.
    Return None to leave the model as it is.
    """
