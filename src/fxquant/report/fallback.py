"""Which ops of a quantized model run in float, and why."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from torch.fx import Node

from fxquant.pt2e.quantizer.float_fallback import FallbackReason, kept_float_reason
from fxquant.pt2e.quantizer.utils import module_path
from fxquant.report.graph_eval import GraphIndex, is_qdq
from fxquant.report.report import FloatOpReport

__all__ = ["describe_op", "float_op_reports"]


def describe_op(node: Node) -> str:
    """A short op name: ``aten.conv2d.default`` -> ``conv2d``; a module call -> its target."""
    if node.op == "call_module":
        return str(node.target)
    packet = getattr(node.target, "_overloadpacket", None)
    if packet is not None:
        return str(getattr(packet, "__name__", packet)).split(".")[-1]
    return str(getattr(node.target, "__name__", node.target))


def _produces_float(node: Node) -> bool:
    value = node.meta.get("val")
    return isinstance(value, Tensor) and value.is_floating_point()


def _between_quantized(node: Node) -> bool:
    reads = any(is_qdq(a) for a in node.all_input_nodes)
    feeds = any(is_qdq(u) for u in node.users)
    return reads or feeds


def _reason(node: Node, index: GraphIndex, fallbacks: Mapping[str, FallbackReason]) -> tuple[FallbackReason, str]:
    op = describe_op(node)
    reason = fallbacks.get(node.name) or kept_float_reason(node)
    if reason is not None:
        return reason, reason.describe()
    annotation = index.annotation.get(node)
    if annotation is not None and annotation._annotated:
        return FallbackReason.BACKEND_CONSTRAINT, (
            f"the quantizer claimed this {op} but its configuration for this scope is None "
            "(set_module_name/set_module_type/set_function_type with None)"
        )
    detail = f"the quantizer has no pattern for {op}"
    if _between_quantized(node):
        detail += "; it runs in float between quantized neighbours (a dequantize before, a quantize after)"
    return FallbackReason.NO_PATTERN, detail


def float_op_reports(index: GraphIndex, fallbacks: Mapping[str, FallbackReason]) -> list[FloatOpReport]:
    """Every op of the converted graph that produces a float tensor and is not quantized,
    in graph order, with its reason (``fallbacks`` names ops kept float on purpose)."""
    quantized = set(index.quantized)
    reports = []
    for node in index.ops:
        if node in quantized or node in index.fused_into or not _produces_float(node) or index.constant.get(node, False):
            continue
        reason, detail = _reason(node, index, fallbacks)
        reports.append(FloatOpReport(name=node.name, module_path=module_path(node), op_kind=describe_op(node),
                                     reason=reason, detail=detail))
    return reports
