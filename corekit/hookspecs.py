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

from corekit.kinds import KIND_LIST

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

    Kinds, the Params base of each, the exact ``build`` call and its product (the table in
    :mod:`corekit.kinds`):

{kinds}

    Not ``firstresult``; the return value is ignored.
    """


def _kinds_doc() -> str:
    lines = []
    for kind in KIND_LIST:
        base = kind.params_base.rpartition(":")[2]
        lines.append(f"    - ``{kind.name}`` ({base}): ``{kind.signature()}``; {kind.contract}.")
    return "\n".join(lines)


corekit_register_components.__doc__ = (corekit_register_components.__doc__ or "").replace("{kinds}", _kinds_doc())


@hookspec
def corekit_trainer_callbacks(spec: Any) -> list[Any]:
    """Return Lightning callbacks to add to the trainer for the run ``spec``.

    Called once when a trainer is built, after plugins loaded; every plugin's list is
    concatenated. Return an empty list to add nothing.
    """
    return []  # a hook specification: pluggy calls the plugins' implementations, never this body


@hookspec
def corekit_register_commands(app: Any) -> None:
    """Add this plugin's commands to the ``corekit`` command line.

    ``app`` is the root ``typer.Typer``: call ``app.command("name")(function)`` or
    ``app.add_typer(sub_app, name="name")``. Called once each time the command line starts,
    after every plugin loaded, plugin by plugin in load order (the built-in commands come from
    the built-in plugin ``corekit_plugins.commands``); a name another plugin already took is an
    error naming both. Import heavy modules inside the commands, not here. The return value is
    ignored.
    """


@hookspec(firstresult=True)
def corekit_prepare_export(model: Any, spec: Any) -> Any:
    """Return a module to export in place of ``model`` (e.g. with fast paths swapped out).

    Called before ONNX export. ``firstresult``: the first non-None result is exported.
    Return None to leave the model as it is.
    """
