"""``fxquant compare``: run a float model and its quantized version on the same data and print
how far apart their outputs are and how long each takes per batch."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fxquant.cli.data_source import load_data
from fxquant.cli.errors import BadInputError, ExitCode
from fxquant.cli.evaluate import TASKS, ModelRun, compare_runs, run_model
from fxquant.cli.inputs import model_batches, note
from fxquant.cli.model_source import load_model
from fxquant.cli.options import (
    DATA_HELP,
    EXIT_CODES_HELP,
    MODEL_HELP,
    HelpFormatter,
    add_common_options,
    add_data_options,
    data_options,
)

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Run FLOAT_MODEL and QUANTIZED (usually a .fxq written by 'fxquant quantize', loaded with
fxquant.load: the model's class is not needed) on the same DATA and print the output SQNR in
dB (all outputs together), the top-1 agreement (when the outputs look like logits, or with
--task classification), the mean cosine similarity of the outputs, and the median wall-clock
milliseconds per batch of each model (one process, no warm-up excluded). A saved quantized model
is the reference q/dq graph; it is also lowered to int8 kernels (fxquant.lowering.lower_to_int8)
and timed that way, with that model's SQNR — the speed you get when you run it (--no-lower to
skip).

FLOAT_MODEL and QUANTIZED are MODEL arguments:
""" + MODEL_HELP.split("\n", 1)[1] + "\n\n" + DATA_HELP

EPILOG = """\
examples:
  fxquant compare fxquant.zoo:efficientnet_lite0 out/lite0_int8.fxq \\
      --data 'fxquant.zoo:imagenet_photos(64, split="holdout")'
  fxquant compare models.py:build_net out/net_int8.fxq --data test.pt --json

""" + EXIT_CODES_HELP


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``compare`` on the top-level parser's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare", help="compare a quantized model's outputs and speed with the float model's",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter,
    )
    parser.add_argument("float_model", metavar="FLOAT_MODEL", help="the float model (see MODEL above)")
    parser.add_argument("quantized", metavar="QUANTIZED", help="the quantized model, e.g. model.fxq")
    parser.add_argument("--data", required=True, metavar="DATA", help="data to run both models on (required; see DATA above)")
    parser.add_argument("--task", choices=TASKS, default="auto",
                        help="classification reports top-1 agreement; auto does when the output looks "
                        "like logits ([N, C], rows not unit-norm) (default: auto)")
    parser.add_argument("--no-lower", action="store_true",
                        help="do not also lower the quantized model to int8 kernels and time it "
                        "(default: lower it when it is a q/dq graph)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of text (default: text)")
    add_data_options(parser, limit_flag="--num-samples", limit_help="use at most N samples of DATA (default: all)")
    add_common_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``fxquant compare``; returns the exit code."""
    float_model = load_model(args.float_model)
    quantized = load_model(args.quantized)
    data = load_data(args.data, data_options(args, limit=args.limit))
    note(f"data: {data.describe()}")
    batches = model_batches(quantized, data, args.batch_size, what=quantized.name,
                            signature=quantized.static_inputs or float_model.static_inputs)
    float_static, quantized_static = float_model.static_inputs, quantized.static_inputs
    if float_static is not None and quantized_static is not None and float_static != quantized_static:
        raise BadInputError(
            f"{float_model.source} and {quantized.source} were captured with different input shapes "
            f"({', '.join(map(str, float_static))} vs {', '.join(map(str, quantized_static))}); "
            "compare models captured alike"
        )
    show = not args.no_progress
    reference = run_model(float_model.module, batches, what="float model", show_progress=show)
    actual = run_model(quantized.module, batches, what="quantized model", show_progress=show)
    comparison = compare_runs(reference, actual, task=args.task)
    lowered = None if args.no_lower else _run_lowered(quantized.module, batches, show)
    lowered_fields = {} if lowered is None else {
        "lowered_ms_per_batch": lowered.median_ms,
        "lowered_sqnr_db": compare_runs(reference, lowered, task=args.task).sqnr_db,
    }
    if args.json:
        print(json.dumps({"float_model": float_model.source, "quantized_model": quantized.source,
                          "data": args.data, "batch_size": int(batches[0][0].shape[0]),
                          **comparison.to_dict(), **lowered_fields}, indent=1))
        return ExitCode.OK
    batch = int(batches[0][0].shape[0])
    rows = [("output SQNR", f"{comparison.sqnr_db:.2f} dB")]
    if comparison.top1_agreement is not None:
        rows.append(("top-1 agreement", f"{100 * comparison.top1_agreement:.2f}%"))
    rows += [
        ("mean cosine", f"{comparison.mean_cosine:.5f}"),
        ("samples", f"{comparison.samples} ({comparison.batches} batches of {batch})"),
        ("float model", f"{comparison.float_ms_per_batch:.2f} ms/batch (median)"),
        ("quantized model", f"{comparison.quantized_ms_per_batch:.2f} ms/batch (median, q/dq graph)"),
    ]
    if lowered_fields:
        timing = f"{lowered_fields['lowered_ms_per_batch']:.2f} ms/batch (median; "
        rows.append(("int8 kernels", timing + f"output SQNR {lowered_fields['lowered_sqnr_db']:.2f} dB)"))
    print(f"{quantized.source} vs {float_model.source} on {args.data}")
    for label, value in rows:
        print(f"  {label:<17}{value}")
    return ExitCode.OK


def _run_lowered(module: Any, batches: Any, show: bool) -> ModelRun | None:
    """The quantized model lowered to int8 kernels and run, or None (with a note) when it is
    not a q/dq graph the lowering accepts."""
    from fxquant.lowering import lower_to_int8

    try:
        lowered = lower_to_int8(module)
    except (TypeError, ValueError) as e:
        note(f"not lowered to int8 kernels ({e}); timing the q/dq graph only")
        return None
    return run_model(lowered, batches, what="int8 kernels", show_progress=show)
