"""Per-unit costs on this machine: fp32 and int8 time of every quantized unit at its real
shapes, the quantize / dequantize cost of every tensor crossing a boundary, and the time of
the ops that stay float whatever the plan.

``measure=True`` times the kernels (medians of short repeated runs, see
:mod:`fxquant.speed.timing`), cached per (kernel, shapes, dtypes, threads) in-process;
``measure=False`` uses a rough analytic model (FLOPs and bytes over rates typical of an
AVX-512 VNNI core) — useful for dry runs and tests, not for deciding on a real machine.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import GraphModule, Node

from fxquant.speed.kernels import (
    dequantize_closure,
    fp32_closure,
    has_int8_kernel,
    int8_kernel,
    quantize_closure,
)
from fxquant.speed.timing import TimingCache, default_cache, num_threads
from fxquant.speed.units import OpUnit, TensorFlow, UnitGraph

__all__ = ["CostTable", "UnitCost", "describe_unit", "estimate_costs"]

logger = logging.getLogger(__name__)
aten = torch.ops.aten


@dataclass(frozen=True, kw_only=True)
class UnitCost:
    """fp32 and int8 time of one unit; ``kernel`` names the int8 kernel that was timed."""

    fp32_ms: float
    int8_ms: float
    kernel: str
    description: str

    def __post_init__(self) -> None:
        if self.fp32_ms < 0 or self.int8_ms < 0:
            raise ValueError(f"UnitCost: times must be >= 0, got fp32 {self.fp32_ms} ms, int8 {self.int8_ms} ms")


@dataclass(frozen=True, kw_only=True)
class CostTable:
    """Costs the planner optimises over: ``units`` by unit name, ``quantize_ms`` /
    ``dequantize_ms`` by the name of the node producing the tensor, ``float_ms`` the total
    time of the ops that are float in every plan."""

    units: dict[str, UnitCost]
    quantize_ms: dict[str, float] = field(default_factory=dict)
    dequantize_ms: dict[str, float] = field(default_factory=dict)
    float_ms: float = 0.0
    threads: int = 1
    measured: bool = True


def _shape(node: Node) -> torch.Size:
    return node.meta["val"].shape


def _dims(shape: torch.Size) -> str:
    return "x".join(str(d) for d in shape[1:]) if len(shape) > 1 else str(tuple(shape))


def describe_unit(unit: OpUnit) -> str:
    """What the unit computes, for people: 'depthwise conv 3x3 stride 2 on 96x113x113'."""
    anchor = unit.anchor
    if anchor.target == aten.conv2d.default:
        weight = _shape(anchor.args[1])  # type: ignore[arg-type]  # conv weights are nodes
        x = _shape(anchor.args[0])  # type: ignore[arg-type]
        groups = int(anchor.args[6]) if len(anchor.args) > 6 else 1  # type: ignore[arg-type]  # an int in the graph
        stride = anchor.args[3] if len(anchor.args) > 3 else [1, 1]
        kind = "depthwise conv" if groups > 1 and groups == x[1] else "conv"
        text = f"{kind} {weight[2]}x{weight[3]}"
        if isinstance(stride, (list, tuple)) and max(stride) > 1:
            text += f" stride {max(stride)}"
        return f"{text} on {_dims(x)}"
    if anchor.target == aten.linear.default:
        weight = _shape(anchor.args[1])  # type: ignore[arg-type]
        x = _shape(anchor.args[0])  # type: ignore[arg-type]
        rows = x.numel() // x[-1]
        dynamic = " dynamic" if unit.dynamic else ""
        return f"linear{dynamic} {weight[1]}->{weight[0]} on {rows} row{'s' if rows != 1 else ''}"
    name = getattr(anchor.target, "__name__", str(anchor.target)).split(".")[0]
    post = "".join(f"+{getattr(p.target, '__name__', str(p.target)).split('.')[0]}" for p in unit.post_ops)
    return f"{name}{post} on {_dims(_shape(unit.output))}"


def _signature(node: Node) -> Hashable:
    def one(arg: Any) -> Hashable:
        if isinstance(arg, Node):
            val = arg.meta.get("val")
            return ("T", tuple(val.shape), str(val.dtype)) if isinstance(val, torch.Tensor) else ("N", arg.op)
        if isinstance(arg, (list, tuple)):
            return tuple(one(a) for a in arg)
        return repr(arg)

    return (str(node.target), one(node.args), tuple(sorted((k, one(v)) for k, v in node.kwargs.items())))


def _measure_unit(unit: OpUnit, gm: GraphModule, cache: TimingCache, threads: int) -> UnitCost:
    signature = tuple(_signature(n) for n in unit.nodes)
    kernel = int8_kernel(unit, gm)
    fp32, int8 = cache.get_or_measure_many(
        [
            (("fp32", signature, threads), lambda: fp32_closure(unit.nodes, gm)),
            (("int8", signature, unit.dynamic, threads), lambda: kernel.closure),
        ],
        threads=threads,
    )
    return UnitCost(fp32_ms=fp32, int8_ms=int8, kernel=kernel.description, description=describe_unit(unit))


def _measure_float_op(node: Node, gm: GraphModule, cache: TimingCache, threads: int) -> float:
    def build() -> Callable[[], object]:
        return fp32_closure((node,), gm)

    try:
        return cache.get_or_measure(("fp32", (_signature(node),), threads), build, threads=threads)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:  # random inputs can be invalid (indices)
        logger.info("speed: could not time float op %s on example inputs (%s); counting 0 ms", node.name, e)
        return 0.0


def _measured(graph: UnitGraph, gm: GraphModule, cache: TimingCache, threads: int) -> CostTable:
    units = {u.name: _measure_unit(u, gm, cache, threads) for u in graph.units}
    quantize_ms, dequantize_ms = {}, {}
    for flow in graph.flows:
        shape = torch.Size(flow.shape)
        quantize_ms[flow.tensor], dequantize_ms[flow.tensor] = cache.get_or_measure_many(
            [
                (("q", flow.shape, threads), functools.partial(quantize_closure, shape)),
                (("dq", flow.shape, threads), functools.partial(dequantize_closure, shape)),
            ],
            threads=threads,
        )
    float_ms = sum(_measure_float_op(n, gm, cache, threads) for n in graph.float_nodes)
    return CostTable(units=units, quantize_ms=quantize_ms, dequantize_ms=dequantize_ms,
                     float_ms=float_ms, threads=threads, measured=True)


# Rough single-core rates of an AVX-512 VNNI CPU (measured once on the development machine:
# torch's fp32 convs on NCHW, oneDNN int8 convs on channels-last as the lowering runs them);
# the analytic model divides work by them.
_FP32_DENSE_FLOPS = 80e9
_INT8_DENSE_FLOPS = 300e9
_FP32_DEPTHWISE_FLOPS = 25e9
_INT8_DEPTHWISE_FLOPS = 60e9
_BYTES_PER_S = 20e9
_CALL_S = 5e-6


def _flops(unit: OpUnit) -> tuple[float, bool]:
    anchor = unit.anchor
    out = _shape(anchor)
    if anchor.target == aten.conv2d.default:
        weight = _shape(anchor.args[1])  # type: ignore[arg-type]  # conv weights are nodes
        x = _shape(anchor.args[0])  # type: ignore[arg-type]
        depthwise = weight[1] == 1 and x[1] > 1
        return 2.0 * out.numel() * weight[1] * weight[2] * weight[3], depthwise
    if anchor.target == aten.linear.default:
        weight = _shape(anchor.args[1])  # type: ignore[arg-type]
        return 2.0 * out.numel() * weight[1], False
    return 0.0, False


def _analytic_unit(unit: OpUnit) -> UnitCost:
    flops, depthwise = _flops(unit)
    elements = sum(_shape(n).numel() for n in unit.nodes)
    memory = elements * 4 / _BYTES_PER_S
    if flops:
        fp32 = flops / (_FP32_DEPTHWISE_FLOPS if depthwise else _FP32_DENSE_FLOPS) + memory
        int8 = flops / (_INT8_DEPTHWISE_FLOPS if depthwise else _INT8_DENSE_FLOPS) + memory / 4
    else:
        fp32, int8 = memory, memory / 4
    kernel = "analytic" if has_int8_kernel(unit.anchor.target) else "analytic (dequantize → fp32 → quantize)"
    if not has_int8_kernel(unit.anchor.target):
        int8 = fp32 + 2 * elements * 5 / _BYTES_PER_S
    return UnitCost(fp32_ms=(fp32 + _CALL_S) * 1e3, int8_ms=(int8 + 2 * _CALL_S) * 1e3,
                    kernel=kernel, description=describe_unit(unit))


def _analytic(graph: UnitGraph, threads: int) -> CostTable:
    def boundary(flow: TensorFlow) -> float:
        # read 4 bytes + write 1 byte per element (or the reverse)
        return (torch.Size(flow.shape).numel() * 5 / _BYTES_PER_S / threads + _CALL_S) * 1e3

    units = {u.name: _analytic_unit(u) for u in graph.units}
    units = {n: UnitCost(fp32_ms=c.fp32_ms / threads, int8_ms=c.int8_ms / threads, kernel=c.kernel,
                         description=c.description) for n, c in units.items()}
    float_ms = sum((_shape(n).numel() * 8 / _BYTES_PER_S + _CALL_S) * 1e3 for n in graph.float_nodes) / threads
    return CostTable(
        units=units,
        quantize_ms={f.tensor: boundary(f) for f in graph.flows},
        dequantize_ms={f.tensor: boundary(f) for f in graph.flows},
        float_ms=float_ms, threads=threads, measured=False,
    )


def estimate_costs(
    gm: GraphModule,
    graph: UnitGraph,
    *,
    threads: int | None = None,
    measure: bool = True,
    cache: TimingCache | None = None,
) -> CostTable:
    """The cost table of ``graph`` (the units of the annotated ``gm``) on this machine.

    ``threads`` is the intra-op thread count to plan for (None: torch's current setting); it
    is set for the measurement and restored afterwards.

    >>> costs = estimate_costs(annotated_gm, find_units(annotated_gm), threads=1)
    >>> costs.units["conv2d_1"].int8_ms
    """
    with num_threads(threads) as count:
        if not measure:
            return _analytic(graph, count)
        with warnings.catch_warnings(), torch.no_grad():
            # torch deprecates quantized tensor factories; timing its int8 kernels needs them
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            return _measured(graph, gm, cache if cache is not None else default_cache(), count)
