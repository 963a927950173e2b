"""``fxquant quantize``: calibrate and quantize a model, save it, write and print its report."""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path
from typing import Any

from fxquant.cli.data_source import common_token_length, load_data
from fxquant.cli.dataset import Batch, as_model_args
from fxquant.cli.errors import BadInputError, BudgetNotMetError, ExitCode
from fxquant.cli.evaluate import TASKS, Comparison, compare_runs, run_model
from fxquant.cli.inputs import model_batches, note, parse_example_input
from fxquant.cli.model_source import InputSignature, LoadedModel, load_model
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

BACKEND_CHOICES = ("x86", "xnnpack", "x86-dynamic")

DESCRIPTION = """\
Quantize MODEL with the PT2E flow: capture it with torch.export, annotate it for --backend,
calibrate on DATA, convert it to a quantized (reference q/dq) graph, and report what each
quantized op costs in accuracy (local and propagated SQNR, likely cause, remedy) and which ops
stay in float and why. Writes the quantized model (--out, loadable with fxquant.load without
the model's class) and the report as JSON, PNG and HTML (--report-dir); prints the report
table and a one-line summary (output SQNR, top-1 agreement for classifiers, mean cosine)
measured against the float model on --eval-data (default: the calibration data).

""" + MODEL_HELP + "\n\n" + DATA_HELP

EPILOG = """\
examples:
  # EfficientNet-Lite0 (real ImageNet weights) calibrated on a folder of photos
  fxquant quantize fxquant.zoo:efficientnet_lite0 --data photos/ --out out/lite0_int8.fxq

  # the zoo's photo crops; measured on a held-out split; keep layers in float until 25 dB
  fxquant quantize fxquant.zoo:efficientnet_lite0 --data 'fxquant.zoo:imagenet_photos(48)' \\
      --eval-data 'fxquant.zoo:imagenet_photos(64, split="holdout")' --accuracy-budget 25

  # your own model from a file, calibration tensors from torch.save, two layers kept in float
  fxquant quantize models.py:build_net --data calib.pt --keep-float features.0 classifier

  # a sentence encoder on a text file (tokenized with the zoo's MiniLM tokenizer)
  fxquant quantize fxquant.zoo:minilm_l6 --data sentences.txt --backend x86-dynamic

""" + EXIT_CODES_HELP


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``quantize`` on the top-level parser's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "quantize", help="calibrate and quantize a model, save it and its report",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="the float model (see MODEL above)")
    parser.add_argument("--data", required=True, metavar="DATA", help="calibration data (required; see DATA above)")
    parser.add_argument("--eval-data", default=None, metavar="DATA",
                        help="held-out data for the report and the summary (default: the calibration data)")
    parser.add_argument("--num-eval", type=int, default=None, metavar="N",
                        help="use at most N samples of --eval-data (default: all)")
    parser.add_argument("--report-batches", type=int, default=None, metavar="K",
                        help="run the per-layer analysis (and --accuracy-budget) on the first K "
                        "evaluation batches only; it runs the model many times, the summary line "
                        "always uses all of them (default: all)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="x86",
                        help="x86: X86InductorQuantizer (uint8 activations, int8 per-channel weights); "
                        "xnnpack: XNNPACKQuantizer symmetric int8 per-channel; x86-dynamic: dynamic "
                        "int8 linear layers (default: x86)")
    parser.add_argument("--example-input", action="append", default=None, metavar="SHAPE",
                        help="shape (and dtype) to capture the model with, one per positional input, "
                        "e.g. 1x3x224x224 or 4x128:int64, or a .pt file holding a tensor; the data "
                        "must match it (default: the first batch of DATA)")
    parser.add_argument("--keep-float", action="append", nargs="+", default=None, metavar="NAME",
                        help="node names or module paths (e.g. classifier, blocks.0.conv) to leave "
                        "in float; repeatable (default: none)")
    parser.add_argument("--accuracy-budget", type=float, default=None, metavar="DB",
                        help="minimum output SQNR in dB against the float model: the worst layers "
                        "are kept in float until it is met (default: no budget); exit code 4 if missed")
    parser.add_argument("--max-float-layers", type=int, default=None, metavar="K",
                        help="at most K layers kept in float for --accuracy-budget (default: no limit)")
    parser.add_argument("--task", choices=TASKS, default="auto",
                        help="classification reports top-1 agreement; auto does when the output looks "
                        "like logits ([N, C], rows not unit-norm) (default: auto)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="where to save the quantized model (default: out/<model name>_int8.fxq)")
    parser.add_argument("--report-dir", type=Path, default=None, metavar="DIR",
                        help="folder for report.json, report.png and report.html (default: the folder of --out)")
    add_data_options(parser, limit_flag="--num-calibration",
                     limit_help="use at most N calibration samples (default: all)")
    add_common_options(parser)
    parser.set_defaults(run=run)
    return parser


def _keep_float_names(args: argparse.Namespace) -> list[str]:
    return [name for group in (args.keep_float or []) for name in group]


def _load_batches(args: argparse.Namespace, loaded: LoadedModel) -> tuple[list[Batch], list[Batch]]:
    signature = tuple(parse_example_input(s) for s in args.example_input) if args.example_input else None
    calibration_data = load_data(args.data, data_options(args, limit=args.limit))
    note(f"calibration data: {calibration_data.describe()}")
    if args.eval_data is None:
        calibration = model_batches(loaded, calibration_data, args.batch_size, signature=signature, what=loaded.name)
        return calibration, calibration
    eval_data = load_data(args.eval_data, data_options(args, limit=args.num_eval))
    note(f"evaluation data: {eval_data.describe()}")
    calibration_data, eval_data = common_token_length(calibration_data, eval_data)
    calibration = model_batches(loaded, calibration_data, args.batch_size, signature=signature, what=loaded.name)
    # The same batch shape as calibration: the quantized graph is captured with it.
    fixed = signature or tuple(InputSignature(shape=tuple(t.shape), dtype=t.dtype) for t in calibration[0])
    return calibration, model_batches(loaded, eval_data, args.batch_size, signature=fixed, what=loaded.name)


def _quantize(args: argparse.Namespace, loaded: LoadedModel, calibration: list[Batch], evaluation: list[Batch]) -> Any:
    from fxquant.api import quantize_model
    from fxquant.engine.errors import CaptureError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = quantize_model(
                loaded.module, calibration[0], [as_model_args(b) for b in calibration], args.backend,
                keep_float=_keep_float_names(args), accuracy_budget=args.accuracy_budget,
                eval_data=[as_model_args(b) for b in evaluation[: args.report_batches]],
                max_float_layers=args.max_float_layers, progress=not args.no_progress,
            )
        except CaptureError as e:
            raise BadInputError(f"cannot capture {loaded.name}: {e}") from e
        except ValueError as e:  # e.g. an unknown --keep-float name, with close matches
            raise BadInputError(str(e)) from e
    # fxquant's own warnings (e.g. a missed budget) are for the user; torch's export chatter is not.
    package_dir = str(Path(__file__).resolve().parents[2])
    for message in dict.fromkeys(str(w.message) for w in caught if w.filename.startswith(package_dir)):
        note(f"warning: {message}")
    return result


def _write_outputs(args: argparse.Namespace, loaded: LoadedModel, result: Any) -> tuple[Path, Path]:
    out: Path = args.out or Path("out") / f"{loaded.name}_int8.fxq"
    report_dir: Path = args.report_dir or out.parent
    out.parent.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    result.save(out)
    result.report.to_json(report_dir / "report.json")
    try:
        result.report.plot(report_dir / "report.png")
        result.report.to_html(report_dir / "report.html")
    except ImportError as e:
        note(f"no PNG/HTML report: {e}")
    return out, report_dir


def run(args: argparse.Namespace) -> int:
    """Run ``fxquant quantize``; returns the exit code."""
    if args.report_batches is not None and args.report_batches < 1:
        raise BadInputError(f"--report-batches must be positive, got {args.report_batches}")
    loaded = load_model(args.model)
    calibration, evaluation = _load_batches(args, loaded)
    result = _quantize(args, loaded, calibration, evaluation)
    comparison = _measure(args, loaded, result.model, evaluation)
    notes = list(result.report.notes)
    analysed = len(evaluation[: args.report_batches])
    if analysed < len(evaluation):
        notes.append(f"per-layer analysis on the first {analysed} of {len(evaluation)} evaluation batches; "
                     f"the metrics (output_sqnr_db, ...) on all {len(evaluation)}")
    report = result.report = dataclasses.replace(
        result.report, metrics={**result.report.metrics, **_metrics(comparison)}, notes=notes,
    )
    out, report_dir = _write_outputs(args, loaded, result)
    print(report)
    print(f"{loaded.name} quantized for {args.backend}: {comparison.summary()}; "
          f"{len(report.layers)} ops quantized, {len(report.float_ops)} left in float")
    print(f"saved {out} and {report_dir / 'report.json'} (.png, .html)")
    budget = args.accuracy_budget
    if budget is not None and report.model_sqnr_db < budget:
        raise BudgetNotMetError(
            f"accuracy budget not met: output SQNR {report.model_sqnr_db:.2f} dB < {budget:.2f} dB "
            f"(files written anyway); raise --max-float-layers, lower the budget, or follow the "
            "remedies in the report"
        )
    return ExitCode.OK


def _measure(args: argparse.Namespace, loaded: LoadedModel, quantized: Any, batches: list[Batch]) -> Comparison:
    show = not args.no_progress
    reference = run_model(loaded.module, batches, what="float model", show_progress=show)
    actual = run_model(quantized, batches, what="quantized model", show_progress=show)
    return compare_runs(reference, actual, task=args.task)


def _metrics(comparison: Comparison) -> dict[str, float]:
    metrics = {"output_sqnr_db": comparison.sqnr_db, "mean_cosine": comparison.mean_cosine,
               "eval_samples": float(comparison.samples)}
    if comparison.top1_agreement is not None:
        metrics["top1_agreement"] = comparison.top1_agreement
    return metrics
