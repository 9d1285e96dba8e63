"""``corekit``: the command-line entry point and its global options.

User errors (:class:`corekit.errors.CorekitError`) print one paragraph on stderr and exit
with code 2, never a traceback. Plugin-load warnings print as one line each.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from corekit.errors import CorekitError

#: what the torch-free base install lacks: the train and export extras
KIT_MODULES = {"torch", "lightning", "torchmetrics", "safetensors", "matplotlib", "onnx", "onnxscript", "onnxruntime"}

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

def _global(
    registry: Optional[Path] = typer.Option(
        None, "--registry", help="a user registry.toml (default: $COREKIT_REGISTRY or ./registry.toml)"
    ),
    strict: bool = typer.Option(False, "--strict", help="a plugin that fails to load is an error, not a warning"),
) -> None:
    """Compose, train, compress and ship GPT-style language models from plugins."""
    from corekit import plugins

    plugins.configure(registry, strict)  # already read from the command line by main(); a no-op then


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"warning: {message}", markup=False, style="yellow")


def make_app(registry) -> typer.Typer:
    """The ``corekit`` command line with every plugin's commands (the ``corekit_register_commands``
    hook, plugin by plugin in load order; the built-in commands are the plugin
    ``corekit_plugins.commands``). A command name two plugins claim is an error naming both."""
    from corekit.errors import PluginConflictError

    app = typer.Typer(
        name="corekit",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain click help: with rich markup, "[export]" and "[compress]" in help texts (spec
        # sections) would be read as markup tags and vanish. Sub-apps set the same.
        rich_markup_mode=None,
    )
    app.callback()(_global)
    manager = registry.plugin_manager
    if manager is None:
        return app
    owners: dict[str, str] = {}
    for impl in manager.hook.corekit_register_commands.get_hookimpls():  # in load order
        before = len(app.registered_commands), len(app.registered_groups)
        impl.function(app=app)
        added = [c.name or getattr(c.callback, "__name__", "?").replace("_", "-")
                 for c in app.registered_commands[before[0]:]]
        added += [g.name or "" for g in app.registered_groups[before[1]:]]
        for name in added:
            if name in owners:
                raise PluginConflictError(
                    f"two plugins add the command `corekit {name}`: {owners[name]} and {impl.plugin_name}; "
                    "uninstall one of them, or take its module out of your registry.toml's modules"
                )
            owners[name] = impl.plugin_name
    return app


def _global_options(argv: list[str]) -> tuple[str | None, bool]:
    """``--registry`` and ``--strict`` from before the command name: the plugins that provide the
    commands must load before the command line can be parsed."""
    registry, strict, i = None, False, 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--strict":
            strict = True
        elif arg == "--registry" and i + 1 < len(argv):
            registry, i = argv[i + 1], i + 1
        elif arg.startswith("--registry="):
            registry = arg.partition("=")[2]
        i += 1
    return registry, strict


def __getattr__(name: str):
    if name == "app":  # the command line with the shared registry's commands (typer.testing uses it)
        from corekit.plugins import get_registry

        return make_app(get_registry())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 2 with a readable message on any user error."""
    warnings.showwarning = _show_warning
    # torch's own deprecation inside Lightning's internals: nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from corekit import lock, plugins

        lock.set_command_line(["corekit", *argv])  # what a run's lock and spec-change log record

        plugins.configure(*_global_options(argv))
        make_app(plugins.get_registry())(args=argv, prog_name="corekit")
    except CorekitError as exc:
        err_console.print(f"error: {exc}", markup=False)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in KIT_MODULES:
            raise
        err_console.print(
            f"error: this command needs {exc.name}, which is not installed here. The base install (and "
            "corekit[edge]) runs exported bundles with corekit-edge only; install the whole kit with "
            "pip install 'corekit[all]'", markup=False)
        sys.exit(2)


if __name__ == "__main__":  # python -m corekit.cli.main
    main()
