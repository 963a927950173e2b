"""Per-layer error measurement: SQNR accumulated over batches, and the statistics the cause
diagnosis reads (which part of the op's quantization hurts, outliers, levels used).

SQNR over several batches is ``10 log10(sum |ref|^2 / sum |ref - x|^2)``, i.e. the SQNR of
all batches concatenated, not a mean of per-batch dBs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.fx import Node

from fxquant.report.graph_eval import (
    DEQUANTIZE_OPS,
    PER_CHANNEL_DEQUANTIZE_OPS,
    GraphIndex,
    LocalValues,
    is_qdq,
)

__all__ = ["EnergyMeter", "LayerMeasurement", "measure_layer_stats", "sqnr_from_energies"]

# statistics are computed on at most this many elements of an activation
_SAMPLE = 1 << 16


def sqnr_from_energies(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)`` in dB (``inf`` without noise, ``-inf`` without signal)."""
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


@dataclass
class EnergyMeter:
    """Signal and noise energy of ``actual`` against ``reference``, summed over calls."""

    signal: float = 0.0
    noise: float = 0.0

    def add(self, reference: Any, actual: Any) -> None:
        for ref, act in zip(_tensors(reference), _tensors(actual)):
            r = ref.detach().reshape(-1).float()
            d = r - act.detach().reshape(-1).float()
            self.signal += float(torch.dot(r, r))
            self.noise += float(torch.dot(d, d))

    @property
    def sqnr_db(self) -> float:
        return sqnr_from_energies(self.signal, self.noise)


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


@dataclass
class LayerMeasurement:
    """Everything measured for one quantized op."""

    node: Node
    local: EnergyMeter = field(default_factory=EnergyMeter)
    propagated: EnergyMeter = field(default_factory=EnergyMeter)
    stats: dict[str, float] = field(default_factory=dict)

    def add(self, values: LocalValues, index: GraphIndex) -> None:
        self.local.add(values.reference, values.local)
        self.propagated.add(values.reference, values.propagated)
        if not self.stats:
            self.stats = measure_layer_stats(values, index)


def _arg_roles(node: Node, index: GraphIndex) -> tuple[list[int], list[int]]:
    """Positions of the op's quantized activation inputs and of its quantized weights."""
    activations: list[int] = []
    weights: list[int] = []
    for j, arg in enumerate(node.args):
        if isinstance(arg, Node) and is_qdq(arg):
            (weights if index.constant.get(arg, False) else activations).append(j)
    return activations, weights


def _with(base: tuple[Any, ...], other: tuple[Any, ...], positions: list[int]) -> tuple[Any, ...]:
    return tuple(other[j] if j in positions else a for j, a in enumerate(base))


def _call(node: Node, args: tuple[Any, ...], index: GraphIndex) -> Any:
    kwargs = {k: v for k, v in node.kwargs.items() if not isinstance(v, Node)}
    if node.op == "call_module":
        return index.gm.get_submodule(str(node.target))(*args, **kwargs)
    return node.target(*args, **kwargs)  # type: ignore[operator]  # call_function targets are callables


def _component_sqnr(reference: Any, actual: Any) -> float:
    meter = EnergyMeter()
    meter.add(reference, actual)
    return meter.sqnr_db


def measure_layer_stats(values: LocalValues, index: GraphIndex) -> dict[str, float]:
    """Statistics of one batch through one quantized op (all floats, JSON-ready):
    ``weight_only_sqnr_db``/``input_only_sqnr_db``/``output_only_sqnr_db`` (the SQNR with only
    that part quantized), activation and weight outlier ratios, quantization levels used,
    clipping, and whether the op is a depthwise conv."""
    node = values.node
    stats: dict[str, float] = {}
    activations, weights = _arg_roles(node, index)
    raw, pre = values.raw_args, values.pre_args
    with torch.no_grad():
        if weights:
            stats["weight_only_sqnr_db"] = _component_sqnr(
                values.head_reference, _call(node, _with(raw, pre, weights), index))
            stats.update(_weight_stats(raw[weights[0]], node.args[weights[0]]))
        if activations:
            stats["input_only_sqnr_db"] = _component_sqnr(
                values.head_reference, _call(node, _with(raw, pre, activations), index))
            j = activations[0]
            stats.update(_activation_stats(raw[j], pre[j], node.args[j]))
        if index.layer_end(node) is not index.tail[node]:
            stats["output_only_sqnr_db"] = _output_only_sqnr(values)
    if _is_depthwise(node, raw):
        stats["depthwise"] = 1.0
    return {k: float(v) for k, v in stats.items()}


def _output_only_sqnr(values: LocalValues) -> float:
    """The output q/dq's share of the local noise (noise energies of independent errors add)."""
    total, before = EnergyMeter(), EnergyMeter()
    total.add(values.reference, values.local)
    before.add(values.reference, values.op_local)
    return sqnr_from_energies(total.signal, max(total.noise - before.noise, 0.0))


def _dq_params(dq: Any) -> tuple[float, float, int, int] | None:
    """(scale, zero point, qmin, qmax) of a per-tensor dequantize node with constant qparams."""
    if not isinstance(dq, Node) or dq.target not in DEQUANTIZE_OPS or len(dq.args) < 5:
        return None
    scale, zero_point, qmin, qmax = dq.args[1:5]
    if not isinstance(scale, (int, float)) or not isinstance(zero_point, int):
        return None
    if not isinstance(qmin, int) or not isinstance(qmax, int):
        return None
    return float(scale), float(zero_point), qmin, qmax


def _sample(t: Tensor) -> Tensor:
    flat = t.detach().reshape(-1).float()
    if flat.numel() > _SAMPLE:
        step = flat.numel() // _SAMPLE + 1
        flat = flat[::step]
    return flat


def _activation_stats(raw: Any, quantized: Any, dq: Any) -> dict[str, float]:
    if not isinstance(raw, Tensor) or not raw.is_floating_point() or raw.numel() == 0:
        return {}
    sample = _sample(raw).abs()
    peak = float(raw.detach().abs().max())
    p9999 = float(torch.quantile(sample, 0.9999))
    stats = {"act_outlier_ratio": peak / p9999 if p9999 > 0 else 1.0}
    params = _dq_params(dq)
    if params is not None and isinstance(quantized, Tensor):
        scale, zero_point, qmin, qmax = params
        codes = torch.round(_sample(quantized) / scale).long() - (qmin - int(zero_point))
        levels = int((torch.bincount(codes.clamp(0, qmax - qmin), minlength=qmax - qmin + 1) > 0).sum())
        stats["act_levels_used"] = levels / (qmax - qmin + 1)
        low, high = (qmin - zero_point) * scale, (qmax - zero_point) * scale
        flat = _sample(raw)
        stats["act_clipped_fraction"] = float(((flat < low - scale / 2) | (flat > high + scale / 2)).float().mean())
    return stats


def _weight_stats(weight: Any, dq: Any) -> dict[str, float]:
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        return {}
    w = weight.detach().float().reshape(weight.shape[0], -1)
    channel_max = w.abs().amax(dim=1)
    channel_rms = w.pow(2).mean(dim=1).sqrt().clamp_min(1e-12)
    median_max = float(channel_max.median())
    per_channel = isinstance(dq, Node) and dq.target in PER_CHANNEL_DEQUANTIZE_OPS
    return {
        "weight_channel_spread": float(channel_max.max()) / median_max if median_max > 0 else 1.0,
        "weight_peak_to_rms": float((channel_max / channel_rms).median()) if per_channel
        else float(w.abs().max() / w.pow(2).mean().sqrt().clamp_min(1e-12)),
        "weight_per_channel": 1.0 if per_channel else 0.0,
        "weights_per_channel": float(w.shape[1]),
    }


_CONV = frozenset({torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.conv3d.default})


def _is_depthwise(node: Node, raw: tuple[Any, ...]) -> bool:
    """A conv with groups == input channels > 1."""
    if node.target not in _CONV or len(node.args) < 7 or not raw:
        return False
    groups = node.args[6]
    x = raw[0]
    return isinstance(groups, int) and groups > 1 and isinstance(x, Tensor) and x.dim() >= 2 and x.shape[1] == groups
