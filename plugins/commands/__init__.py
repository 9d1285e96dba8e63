"""The built-in ``corekit`` commands, added through the ``corekit_register_commands`` hook:
the same road a third-party package's commands take.

The command modules (:mod:`corekit.cli`) import torch and Lightning only inside the commands,
so building the command line stays cheap.
"""

from __future__ import annotations

from corekit import hookimpl


@hookimpl
def corekit_register_commands(app):
    from corekit.cli import (
        compress_cmd, data_cmd, export_cmd, finetune_cmd, generate_cmd, plugins_cmd, run_cmd, spec_cmd, train_cmd,
        verify_cmd,
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
    app.command("verify")(verify_cmd.verify)
