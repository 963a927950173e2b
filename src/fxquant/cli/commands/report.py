"""``fxquant report``: re-render a saved report (table on stdout, optionally PNG and HTML)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fxquant.cli.errors import BadInputError, ExitCode
from fxquant.cli.options import EXIT_CODES_HELP, HelpFormatter, add_common_options

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Print a report written by 'fxquant quantize' (report.json) as a table: per quantized op its
local SQNR (only that op quantized), propagated SQNR (everything up to it quantized), the
quantization spec, a likely cause and a remedy; then the ops left in float and why. Optionally
render it again as a PNG plot and a self-contained HTML page."""

EPILOG = """\
examples:
  fxquant report out/report.json
  fxquant report out/report.json --worst 5
  fxquant report out/report.json --png errors.png --html report.html

""" + EXIT_CODES_HELP


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` on the top-level parser's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="print (and re-render) a saved quantization report",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter,
    )
    parser.add_argument("report", type=Path, metavar="REPORT.json", help="a report.json written by 'fxquant quantize'")
    parser.add_argument("--png", type=Path, default=None, metavar="FILE",
                        help="also write the per-layer error plot to FILE (default: no plot)")
    parser.add_argument("--html", type=Path, default=None, metavar="FILE",
                        help="also write the self-contained HTML page to FILE (default: no page)")
    parser.add_argument("--worst", type=int, default=None, metavar="N",
                        help="after the table, list the N layers whose float fallback would recover "
                        "the most accuracy (default: not listed)")
    add_common_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``fxquant report``; returns the exit code."""
    from fxquant.report import QuantizationReport

    path: Path = args.report
    if not path.is_file():
        raise BadInputError(f"{path}: no such report file; 'fxquant quantize' writes report.json into --report-dir")
    try:
        report = QuantizationReport.from_json(path)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"cannot read the report {path}: {e}") from e
    print(report)
    if args.worst is not None:
        if args.worst < 1:
            raise BadInputError(f"--worst must be positive, got {args.worst}")
        print("\nlayers whose float fallback recovers the most output SQNR:")
        for rank, layer in enumerate(report.worst(args.worst), start=1):
            how = "measured" if layer.recovery_measured else "estimated"
            print(f"  {rank}. {layer.name} ({layer.module_path or '-'}, {layer.op_kind}): "
                  f"+{layer.recovery_db:.2f} dB ({how}); {layer.cause or 'no clear cause'}")
    for target, render in ((args.png, report.plot), (args.html, report.to_html)):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            print(f"wrote {render(target)}")
    return ExitCode.OK
