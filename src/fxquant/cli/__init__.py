"""The ``fxquant`` command line: ``fxquant quantize``, ``fxquant report``, ``fxquant compare``
(installed as the ``fxquant`` entry point; also ``python -m fxquant``)."""

from fxquant.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
