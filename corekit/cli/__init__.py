"""The ``corekit`` command line (typer). Heavy imports stay inside the commands."""
