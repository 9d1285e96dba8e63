"""``python -m corekit``: the same as the ``corekit`` command."""

from corekit.cli.main import main

main()
