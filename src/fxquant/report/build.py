"""Build a :class:`~fxquant.report.report.QuantizationReport` from a float graph, its quantized
version and some data.

    >>> float_gm = capture_with_debug_handles(model.eval(), (example,))
    >>> quantized = convert_pt2e(calibrate(prepare_pt2e(copy.deepcopy(float_gm), quantizer)))
    >>> report = build_report(float_gm, quantized, batches)
    >>> print(report); report.worst(3)

Both graphs must carry the same numeric debug handles (capture once, quantize a copy). The
float reference is the float graph with batch norms folded, as ``prepare_pt2e`` folds them.

Ranking: keeping a layer in float removes its local noise (its weight and input quantization,
and its output quantization unless the consumers quantize that tensor anyway). That estimate
orders the layers; the ``measure_top`` first ones are then measured — the quantized model run
with that one op in float — and ranked by the output SQNR they actually recover.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Node

from fxquant.engine.constants import get_attr_value
from fxquant.engine.fold_bn import fold_bn_into_conv_and_linear
from fxquant.metrics import mean_cosine
from fxquant.pt2e._numeric_debugger import generate_numeric_debug_handle
from fxquant.pt2e.capture import capture
from fxquant.pt2e.quantizer.float_fallback import FallbackReason
from fxquant.pt2e.quantizer.utils import module_path
from fxquant.report.batches import materialize
from fxquant.report.causes import LayerEvidence, diagnose
from fxquant.report.errors import EnergyMeter, LayerMeasurement
from fxquant.report.fallback import describe_op, float_op_reports
from fxquant.report.graph_eval import (
    GraphIndex,
    LocalValues,
    flat_inputs,
    handle_of,
    is_qdq,
    run_float,
    run_quantized,
    run_with_float_ops,
)
from fxquant.report.progress import progress_bar
from fxquant.report.report import LayerReport, QuantizationReport
from fxquant.report.spec_summary import spec_summary

__all__ = ["build_report", "capture_with_debug_handles", "float_reference", "measure_float_fallback"]

Metric = Callable[[Tensor, Tensor], float]


def capture_with_debug_handles(model: nn.Module, example_inputs: tuple[Any, ...], *,
                               dynamic_shapes: Any = None) -> GraphModule:
    """Capture ``model`` with ``torch.export`` and tag every node with a numeric debug handle,
    so that a report can link its quantized version back to it. Quantize a *copy* of the
    result and keep the original as the float reference."""
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of positional inputs, got "
                        f"{type(example_inputs).__name__}; wrap a single tensor as (x,)")
    try:
        program = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes)
    except Exception:  # torch raises many types here; capture() turns them into a clear CaptureError
        capture(model, example_inputs, dynamic_shapes=dynamic_shapes)
        raise
    generate_numeric_debug_handle(program)
    return program.module()


def _require_handles(gm: nn.Module, role: str) -> GraphModule:
    if not isinstance(gm, GraphModule):
        raise TypeError(
            f"build_report: the {role} model must be a GraphModule captured with "
            f"capture_with_debug_handles (got {type(gm).__name__}); capture the float model with "
            "fxquant.report.capture_with_debug_handles(model, example_inputs) and quantize a copy"
        )
    if not any(handle_of(n) is not None for n in gm.graph.nodes):
        raise ValueError(
            f"build_report: the {role} model has no numeric debug handles; capture the float model "
            "with fxquant.report.capture_with_debug_handles(model, example_inputs) and quantize a "
            "copy of that graph"
        )
    return gm


def float_reference(float_model: GraphModule) -> GraphModule:
    """A copy of the float graph with batch norms folded into the convs/linears before them
    (what the quantized model computes in float)."""
    reference = copy.deepcopy(float_model)
    fold_bn_into_conv_and_linear(reference)
    return reference


def _float_weights(reference: GraphIndex) -> Callable[[Node, int], Any]:
    """For a quantized op and an argument position, the float model's constant there."""
    by_handle = {h: n for n in reference.ops if (h := handle_of(n)) is not None}

    def float_weight(node: Node, position: int) -> Any:
        handle = handle_of(node)
        counterpart = by_handle.get(handle) if handle is not None else None
        if counterpart is None or position >= len(counterpart.args):
            return None
        arg = counterpart.args[position]
        if isinstance(arg, Node) and arg.op == "get_attr":
            return get_attr_value(reference.gm, str(arg.target))
        return None

    return float_weight


def _cat_outputs(outputs: list[list[Tensor]]) -> list[Tensor]:
    return [torch.cat([o[i].reshape(-1, *o[i].shape[1:]) if o[i].dim() else o[i].reshape(1) for o in outputs])
            for i in range(len(outputs[0]))] if outputs else []


def build_report(
    float_model: GraphModule,
    quantized_model: GraphModule,
    data: Iterable[Any],
    *,
    fallbacks: Mapping[str, FallbackReason] | None = None,
    progress: bool = False,
    measure_top: int = 8,
    metrics: Mapping[str, Metric] | None = None,
    title: str = "fxquant quantization report",
) -> QuantizationReport:
    """Run ``data`` (batches: a tensor, or a tuple of positional inputs) through the float
    graph and the quantized one and report, per quantized op, the local and propagated SQNR,
    the spec, a likely cause and remedy, and how much output SQNR keeping it in float
    recovers (measured for the ``measure_top`` best candidates); plus the ops left in float
    and why (``fallbacks``: the reasons of ops kept in float on purpose). ``metrics`` are
    computed on the first output (default: mean cosine similarity)."""
    reference_gm = float_reference(_require_handles(float_model, "float"))
    reference = GraphIndex.of(reference_gm)
    quantized = GraphIndex.of(_require_handles(quantized_model, "quantized"))
    float_weights = _float_weights(reference)
    batches = materialize(data, "build_report data")
    measurements: dict[Node, LayerMeasurement] = {}

    def on_layer(values: LocalValues) -> None:
        measurements.setdefault(values.node, LayerMeasurement(node=values.node)).add(values, quantized)

    model_meter = EnergyMeter()
    float_outputs: list[list[Tensor]] = []
    quant_outputs: list[list[Tensor]] = []
    with torch.no_grad():
        for args in progress_bar(batches, desc="measuring layer errors", enabled=progress):
            float_values, float_out = run_float(reference, flat_inputs(reference.gm, args))
            quant_out = run_quantized(quantized, flat_inputs(quantized.gm, args), float_values, float_weights, on_layer)
            del float_values
            model_meter.add(float_out, quant_out)
            float_outputs.append(float_out)
            quant_outputs.append(quant_out)
    model_db = model_meter.sqnr_db
    layers = _layer_reports(quantized, measurements, model_db)
    layers = _measure_candidates(layers, quantized, batches, float_outputs, float_weights, model_db,
                                 measure_top, progress)
    ref_cat, quant_cat = _cat_outputs(float_outputs), _cat_outputs(quant_outputs)
    chosen_metrics = dict(metrics) if metrics is not None else {"mean_cosine": mean_cosine}
    measured = {name: float(fn(ref_cat[0], quant_cat[0])) for name, fn in chosen_metrics.items()} if ref_cat else {}
    return QuantizationReport(
        layers=layers, float_ops=float_op_reports(quantized, fallbacks or {}), model_sqnr_db=model_db,
        metrics=measured, notes=[], title=title,
    )


def _removable_nsr(m: LayerMeasurement, index: GraphIndex) -> float:
    """Noise-to-signal ratio that keeping the op in float would remove (locally)."""
    nsr = m.local.noise / m.local.signal if m.local.signal > 0 else 0.0
    out_db = m.stats.get("output_only_sqnr_db")
    if out_db is not None and _consumers_requantize(m.node, index):
        nsr = max(nsr - 10 ** (-out_db / 10), 0.0)
    return nsr


def _consumers_requantize(node: Node, index: GraphIndex) -> bool:
    """Whether every consumer of ``node``'s quantized output quantizes that input itself."""
    tail = index.tail[node]
    end = index.layer_end(node)
    readers = list(end.users) if end is not tail else []
    consumers = [c for r in readers for c in (r.users if is_qdq(r) else [r])]
    return bool(consumers) and all(c.op != "output" and index.quantizes_edge(tail, c) for c in consumers)


def _layer_reports(index: GraphIndex, measurements: Mapping[Node, LayerMeasurement], model_db: float) -> list[LayerReport]:
    measured = [measurements[n] for n in index.quantized if n in measurements]
    nsr = {m.node: _removable_nsr(m, index) for m in measured}
    total = sum(nsr.values())
    layers = []
    for m in measured:
        share = nsr[m.node] / total if total > 0 else 0.0
        # the output noise this op's share would remove, if noise powers add up
        estimate = -10 * math.log10(max(1.0 - share, 1e-12)) if math.isfinite(model_db) else 0.0
        evidence = LayerEvidence(name=m.node.name, op_kind=describe_op(m.node), local_sqnr_db=m.local.sqnr_db,
                                 propagated_sqnr_db=m.propagated.sqnr_db, stats=m.stats)
        found = diagnose(evidence)
        layers.append(LayerReport(
            name=m.node.name, module_path=module_path(m.node), op_kind=describe_op(m.node),
            spec=spec_summary(m.node, index), local_sqnr_db=m.local.sqnr_db,
            propagated_sqnr_db=m.propagated.sqnr_db, recovery_db=estimate, recovery_measured=False,
            cause=found.cause, remedy=found.remedy, stats=dict(m.stats),
        ))
    return layers


def measure_float_fallback(index: GraphIndex, batches: list[tuple[Any, ...]], float_outputs: list[list[Tensor]],
                           float_ops: set[Node], float_weights: Callable[[Node, int], Any]) -> float:
    """Output SQNR of the quantized model with ``float_ops`` put back in float."""
    meter = EnergyMeter()
    for args, reference in zip(batches, float_outputs):
        meter.add(reference, run_with_float_ops(index, flat_inputs(index.gm, args), float_ops, float_weights))
    return meter.sqnr_db


def _measure_candidates(layers: list[LayerReport], index: GraphIndex, batches: list[tuple[Any, ...]],
                        float_outputs: list[list[Tensor]], float_weights: Callable[[Node, int], Any],
                        model_db: float, top: int, progress: bool) -> list[LayerReport]:
    if top <= 0 or not layers or not math.isfinite(model_db):
        return layers
    by_name = {n.name: n for n in index.quantized}
    candidates = sorted(layers, key=lambda layer: -layer.recovery_db)[:top]
    measured: dict[str, float] = {}
    with torch.no_grad():
        for layer in progress_bar(candidates, desc="measuring float fallbacks", enabled=progress):
            db = measure_float_fallback(index, batches, float_outputs, {by_name[layer.name]}, float_weights)
            measured[layer.name] = db - model_db if math.isfinite(db) else _recovers_all(model_db)
    floor = min(measured.values())
    result = []
    for layer in layers:
        if layer.name in measured:
            result.append(_replace(layer, recovery_db=measured[layer.name], recovery_measured=True))
        else:  # an unmeasured estimate never outranks a measured candidate
            result.append(_replace(layer, recovery_db=min(layer.recovery_db, floor)))
    return result


def _recovers_all(model_db: float) -> float:
    # the model becomes exact: report a large finite gain rather than inf
    return 200.0 - model_db


def _replace(layer: LayerReport, **changes: Any) -> LayerReport:
    from dataclasses import replace

    return replace(layer, **changes)
