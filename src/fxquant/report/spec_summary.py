"""One line saying how an op is quantized: ``in u8 per-tensor (HistogramObserver) · w i8
per-channel (PerChannelMinMaxObserver) · out shared``."""

from __future__ import annotations

import torch
from torch.fx import Node

from fxquant.pt2e.quantizer.quantizer import (
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from fxquant.report.graph_eval import GraphIndex

__all__ = ["describe_spec", "spec_summary"]

_DTYPE = {torch.uint8: "u8", torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.quint8: "u8",
          torch.qint8: "i8", torch.qint32: "i32", torch.float16: "f16", torch.float32: "f32"}
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)


def _constructor_name(ctr: object) -> str:
    partial = getattr(ctr, "p", None)  # a with_args factory wraps a functools.partial
    func = getattr(partial, "func", ctr)
    return str(getattr(func, "__name__", type(func).__name__))


def describe_spec(spec: QuantizationSpecBase | None) -> str:
    """A short description of one spec."""
    if spec is None:
        return "float"
    if isinstance(spec, SharedQuantizationSpec):
        return "shared"
    if isinstance(spec, DerivedQuantizationSpec):
        return f"{_DTYPE.get(spec.dtype, str(spec.dtype))} derived"
    if isinstance(spec, FixedQParamsQuantizationSpec):
        return f"{_DTYPE.get(spec.dtype, str(spec.dtype))} fixed scale {spec.scale:g}"
    if isinstance(spec, QuantizationSpec):
        granularity = "per-channel" if spec.qscheme in _PER_CHANNEL else "per-tensor"
        dynamic = " dynamic" if spec.is_dynamic else ""
        return (f"{_DTYPE.get(spec.dtype, str(spec.dtype))} {granularity}{dynamic} "
                f"({_constructor_name(spec.observer_or_fake_quant_ctr)})")
    return type(spec).__name__


def spec_summary(node: Node, index: GraphIndex) -> str:
    """How ``node``'s inputs, weights and output are quantized, from its annotation."""
    annotation = index.annotation.get(node)
    if annotation is None:
        return ""
    parts = []
    weights_seen = 0
    for source, spec in annotation.input_qspec_map.items():
        if source.op == "get_attr" or index.constant.get(source, False):
            role = "w" if weights_seen == 0 else "b"
            weights_seen += 1
        else:
            role = "in"
        if spec is not None or role == "in":
            parts.append(f"{role} {describe_spec(spec)}")
    if annotation.output_qspec is not None:
        parts.append(f"out {describe_spec(annotation.output_qspec)}")
    return " · ".join(parts)
