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

app = typer.Typer(
    name="corekit",
    help="Compose, train, compress and ship GPT-style language models from plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: with rich markup, "[export]" and "[compress]" in help texts (spec
    # sections) would be read as markup tags and vanish. Sub-apps set the same.
    rich_markup_mode=None,
)


@app.callback()
def _global(
    registry: Optional[Path] = typer.Option(
        None, "--registry", help="a user registry.toml (default: $COREKIT_REGISTRY or ./registry.toml)"
    ),
    strict: bool = typer.Option(False, "--strict", help="a plugin that fails to load is an error, not a warning"),
) -> None:
    from corekit import plugins

    plugins.configure(registry, strict)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"warning: {message}", markup=False, style="yellow")


def _register_commands() -> None:
    from corekit.cli import (
        compress_cmd, data_cmd, export_cmd, finetune_cmd, generate_cmd, plugins_cmd, run_cmd, spec_cmd, train_cmd,
    )

    app.command("plugins")(plugins_cmd.plugins)
    app.add_typer(spec_cmd.app, name="spec")
    app.add_typer(data_cmd.tokenizer_app, name="tokenizer")
    app.add_typer(data_cmd.data_app, name="data")
    app.command("train")(train_cmd.train)
    app.command("eval")(run_cmd.evaluate)
    app.command("run")(run_cmd.run)
    app.command("generate")(generate_cmd.generate)
    app.command("compress")(compress_cmd.compress)
    app.command("finetune")(finetune_cmd.finetune)
    app.command("classify")(finetune_cmd.classify)
    app.command("chat")(finetune_cmd.chat)
    app.add_typer(export_cmd.app, name="export")


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 2 with a readable message on any user error."""
    warnings.showwarning = _show_warning
    # torch's own deprecation inside Lightning's internals: nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    try:
        app(args=argv, prog_name="corekit")
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
