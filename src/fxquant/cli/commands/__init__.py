"""One module per ``fxquant`` subcommand, each with ``add_parser(subparsers)`` and ``run(args)``."""

__all__: list[str] = []
