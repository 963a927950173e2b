"""One call from a float model to a quantized one, with a report of what quantization cost.

    >>> result = fxquant.quantize_model(model, (example,), calibration_batches, backend="x86")
    >>> print(result.report)              # per-layer errors, causes, remedies, float ops
    >>> result.report.plot("errors.png"); result.report.to_html("report.html")
    >>> result.save("model.fxq")

With ``accuracy_budget=30.0`` (dB of output SQNR against the float model) the worst layers are
kept in float, one at a time, until the model meets the budget.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.float_fallback import FallbackReason, KeepFloatQuantizer
from fxquant.pt2e.quantizer.quantizer import Quantizer
from fxquant.report.batches import materialize
from fxquant.report.build import build_report, capture_with_debug_handles
from fxquant.report.progress import progress_bar
from fxquant.report.report import QuantizationReport

__all__ = ["BACKENDS", "QuantizationResult", "backend_quantizer", "quantize_model"]


def _x86() -> Quantizer:
    from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


def _x86_dynamic() -> Quantizer:
    from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_dynamic=True))


def _xnnpack() -> Quantizer:
    from fxquant.pt2e.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


# backend name -> (factory of its default quantizer, description)
BACKENDS: dict[str, tuple[Callable[[], Quantizer], str]] = {
    "x86": (_x86, "X86InductorQuantizer, default static config (uint8 activations, int8 per-channel weights)"),
    "xnnpack": (_xnnpack, "XNNPACKQuantizer, symmetric int8 per-channel static config"),
    "x86-dynamic": (_x86_dynamic, "X86InductorQuantizer, dynamic activations (linear layers), int8 weights"),
}


def backend_quantizer(backend: str) -> Quantizer:
    """The default quantizer of ``backend`` (one of :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)} "
                         "(or pass quantizer=... for any other)")
    return BACKENDS[backend][0]()


@dataclass
class QuantizationResult:
    """What :func:`quantize_model` returns: the quantized ``model`` (a reference q/dq
    ``GraphModule``, runnable as is or lowered with ``fxquant.pt2e.lowering``), its ``report``
    (None if ``report=False``) and the ops kept in float with their reasons."""

    model: GraphModule
    report: QuantizationReport | None
    keep_float: dict[str, FallbackReason] = field(default_factory=dict)
    example_inputs: tuple[Any, ...] = ()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the quantized model to one file (:func:`fxquant.save`)."""
        from fxquant.serialization import save

        save(self.model, path, example_inputs=self.example_inputs or None)


def _quantize_once(float_gm: GraphModule, quantizer: Quantizer, keep_float: Mapping[str, FallbackReason],
                   calibration: list[tuple[Any, ...]], progress: bool) -> tuple[GraphModule, dict[str, FallbackReason]]:
    wrapper = KeepFloatQuantizer(quantizer, dict(keep_float))
    prepared = prepare_pt2e(copy.deepcopy(float_gm), wrapper)
    with torch.no_grad():
        for args in _iterate(calibration, progress, "calibrating"):
            prepared(*args)
    return convert_pt2e(prepared), dict(wrapper.kept_float)


def _iterate(batches: list[tuple[Any, ...]], progress: bool, desc: str) -> Iterator[tuple[Any, ...]]:
    return iter(progress_bar(batches, desc=desc, enabled=progress))


def quantize_model(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    calibration_data: Iterable[Any],
    backend: str = "x86",
    *,
    quantizer: Quantizer | None = None,
    keep_float: Iterable[str] | Mapping[str, FallbackReason] = (),
    accuracy_budget: float | None = None,
    eval_data: Iterable[Any] | None = None,
    max_float_layers: int | None = None,
    report: bool = True,
    progress: bool = True,
    dynamic_shapes: Any = None,
    metrics: Mapping[str, Callable[[torch.Tensor, torch.Tensor], float]] | None = None,
) -> QuantizationResult:
    """Capture ``model``, quantize it for ``backend`` (``"x86"``, ``"xnnpack"``,
    ``"x86-dynamic"``; or any ``quantizer``), calibrate on ``calibration_data`` (batches: a
    tensor, or a tuple of positional inputs) and report the per-layer errors on ``eval_data``
    (default: the calibration data).

    ``keep_float``: node or module names to leave in float (a mapping gives the reasons).
    ``accuracy_budget``: the minimum output SQNR in dB against the float model; the
    worst-ranked layers are kept in float (reason ``ACCURACY_BUDGET``) one at a time until the
    model meets it, or ``max_float_layers`` are in float (then a warning, and a note in the
    report). ``progress`` shows bars over calibration and evaluation when tqdm is installed.

        >>> result = quantize_model(model, (x[:1],), x.split(8), accuracy_budget=25.0)
        >>> result.report.worst(3)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_model expects an nn.Module, got {type(model).__name__}")
    if quantizer is None:
        quantizer = backend_quantizer(backend)
    elif not isinstance(quantizer, Quantizer):
        raise TypeError(f"quantizer must be a fxquant Quantizer, got {type(quantizer).__name__}")
    if accuracy_budget is not None and not report:
        raise ValueError("accuracy_budget needs the report (it ranks the layers); pass report=True")
    if max_float_layers is not None and max_float_layers < 0:
        raise ValueError(f"max_float_layers must be >= 0, got {max_float_layers}")
    calibration = materialize(calibration_data, "calibration_data")
    evaluation = materialize(eval_data, "eval_data") if eval_data is not None else calibration
    if isinstance(keep_float, Mapping):
        chosen: dict[str, FallbackReason] = dict(keep_float)
    else:
        if isinstance(keep_float, str):
            raise TypeError("keep_float must be a collection of names, not one string; wrap it: [name]")
        chosen = {name: FallbackReason.USER_CHOICE for name in keep_float}

    float_gm = capture_with_debug_handles(model.eval(), example_inputs, dynamic_shapes=dynamic_shapes)
    quantized, kept = _quantize_once(float_gm, quantizer, chosen, calibration, progress)
    if not report:
        return QuantizationResult(model=quantized, report=None, keep_float=kept, example_inputs=example_inputs)
    measure = functools.partial(build_report, progress=progress, metrics=metrics)
    result_report = measure(float_gm, quantized, evaluation, fallbacks=kept)
    if accuracy_budget is not None:
        quantized, kept, result_report = _meet_budget(
            float_gm, quantizer, chosen, calibration, evaluation, accuracy_budget, max_float_layers,
            progress, measure, (quantized, kept, result_report),
        )
    return QuantizationResult(model=quantized, report=result_report, keep_float=kept, example_inputs=example_inputs)


def _meet_budget(
    float_gm: GraphModule, quantizer: Quantizer, chosen: dict[str, FallbackReason],
    calibration: list[tuple[Any, ...]], evaluation: list[tuple[Any, ...]], budget: float,
    max_float_layers: int | None, progress: bool, measure: Callable[..., QuantizationReport],
    current: tuple[GraphModule, dict[str, FallbackReason], QuantizationReport],
) -> tuple[GraphModule, dict[str, FallbackReason], QuantizationReport]:
    """Greedy: keep the worst-ranked layer in float, re-quantize, re-measure; until the budget
    is met or no more layers may be kept in float."""
    quantized, kept, rep = current
    added = 0
    while rep.model_sqnr_db < budget:
        if max_float_layers is not None and added >= max_float_layers:
            return quantized, kept, _with_note(rep, _budget_missed(budget, rep, added, "max_float_layers reached"))
        candidates = [layer for layer in rep.worst(len(rep.layers)) if layer.name not in kept]
        if not candidates:
            return quantized, kept, _with_note(rep, _budget_missed(budget, rep, added, "no quantized layer left"))
        chosen = {**chosen, candidates[0].name: FallbackReason.ACCURACY_BUDGET}
        added += 1
        quantized, kept = _quantize_once(float_gm, quantizer, chosen, calibration, progress)
        rep = measure(float_gm, quantized, evaluation, fallbacks=kept)
    if added:
        rep = _with_note(rep, f"accuracy budget {budget:.1f} dB met ({rep.model_sqnr_db:.1f} dB) "
                              f"with {added} layer(s) kept in float")
    return quantized, kept, rep


def _budget_missed(budget: float, rep: QuantizationReport, added: int, why: str) -> str:
    message = (f"accuracy budget {budget:.1f} dB not met: output SQNR {rep.model_sqnr_db:.1f} dB with "
               f"{added} layer(s) kept in float ({why}); raise max_float_layers, lower the budget, "
               "or follow the remedies of the worst layers")
    warnings.warn(message, stacklevel=3)
    return message


def _with_note(rep: QuantizationReport, note: str) -> QuantizationReport:
    return QuantizationReport(layers=rep.layers, float_ops=rep.float_ops, model_sqnr_db=rep.model_sqnr_db,
                              metrics=rep.metrics, notes=[*rep.notes, note], title=rep.title)

