"""The ``fxquant`` command: parse arguments, run a subcommand, turn failures into one message
and an exit code."""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Sequence

from fxquant.cli.commands import compare, quantize, report
from fxquant.cli.errors import CliError, ExitCode
from fxquant.cli.options import EXIT_CODES_HELP, HelpFormatter

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
fxquant: quantize PyTorch models to int8 and see what it cost, layer by layer.

  fxquant quantize MODEL --data DATA   calibrate, quantize, save the model and its report
  fxquant report REPORT.json           print (and re-render) a saved report
  fxquant compare FLOAT QUANTIZED --data DATA
                                       compare outputs and speed of the two models

Run 'fxquant <command> --help' for the options of each command. Results go to stdout;
progress bars and notes go to stderr."""

EPILOG = """\
examples:
  fxquant quantize fxquant.zoo:efficientnet_lite0 --data photos/ --out out/lite0_int8.fxq
  fxquant report out/report.json --html out/report.html
  fxquant compare fxquant.zoo:efficientnet_lite0 out/lite0_int8.fxq --data photos/

""" + EXIT_CODES_HELP


def _version() -> str:
    import fxquant

    return str(getattr(fxquant, "__version__", "unknown"))


def build_parser() -> argparse.ArgumentParser:
    """The ``fxquant`` argument parser with its ``quantize``, ``report`` and ``compare`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="fxquant", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fxquant {_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in (quantize, report, compare):
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fxquant`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code
    (0 ok, 1 internal error, 2 usage, 3 bad input, 4 accuracy budget not met).

        >>> main(["report", "out/report.json"])
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    try:
        with warnings.catch_warnings():
            if not args.debug:  # torch's deprecation notices are for developers, not CLI users
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
            return int(args.run(args))
    except CliError as e:
        if args.debug:
            traceback.print_exc()
        print(f"fxquant {_command(argv)}: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print("fxquant: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  # the last resort: one line and a pointer to --debug, not a traceback
        if args.debug:
            traceback.print_exc()
        print(
            f"fxquant {_command(argv)}: internal error: {type(e).__name__}: {e}\n"
            "  (rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL_ERROR)


def _command(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return next((a for a in args if not a.startswith("-")), "")
