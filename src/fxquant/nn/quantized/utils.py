"""Helpers shared by the static quantized modules.

* turning an observed float weight into a quantized tensor (:func:`quantize_weight`), with the
  observer's narrower integer range applied (:func:`clamp_weight`);
* reading a module's output qparams from its observer (:func:`output_qparams`);
* taking apart the float modules that ``from_float`` receives: a fused module (a
  ``Sequential`` whose first child holds the weights) and a QAT module that still carries a
  batch norm to fold (:func:`fold_bn_into_weights`);
* a ``repr`` that leaves out the packed-parameter child (:func:`repr_without_packed_params`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import _addindent
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
from torch.nn.utils.parametrize import type_before_parametrizations

__all__ = [
    "FromFloatError",
    "WeightedQuantizedModule",
    "clamp_weight",
    "fold_bn_into_weights",
    "observed_output_qparams",
    "output_qparams",
    "quantize_weight",
    "repr_without_packed_params",
    "require_observed",
    "require_type",
    "split_fused",
    "unwrap_fused",
    "weight_observer_of",
]

_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric)


class FromFloatError(TypeError, AssertionError):
    """``from_float`` got a module it cannot convert (wrong type, no qconfig, no observer).

    Also an ``AssertionError``, which is what upstream raises in these cases, so existing
    ``except AssertionError`` handlers keep working."""


class WeightedQuantizedModule(nn.Module, metaclass=abc.ABCMeta):
    """A quantized module with weights that can also be built from a reference module."""

    @classmethod
    @abc.abstractmethod
    def from_reference(cls, ref_module: Any, output_scale: float, output_zero_point: int) -> Any:
        """Build the quantized module from a reference module and the output qparams."""


def weight_observer_of(post_process: Any) -> Any:
    """The observer inside a fake-quantize module, or ``post_process`` itself."""
    return getattr(post_process, "activation_post_process", post_process)


def clamp_weight(qweight: torch.Tensor, post_process: Any) -> torch.Tensor:
    """Clamp a quantized weight to the observer's ``[quant_min, quant_max]``.

    Observers such as ``weight_observer_range_neg_127_to_127`` use a narrower range than the
    dtype; ``torch.quantize_per_*`` only knows the dtype's range, so the integers are clamped
    afterwards (the per-channel quantized clamp kernel does not exist).
    """
    observer = weight_observer_of(post_process)
    if qweight.dtype not in (torch.qint8, torch.quint8, torch.qint32):
        return qweight
    info = torch.iinfo(qweight.int_repr().dtype)
    qmin, qmax = int(observer.quant_min), int(observer.quant_max)
    if qmin <= info.min and qmax >= info.max:
        return qweight
    ints = torch.clamp(qweight.int_repr(), qmin, qmax)
    if qweight.qscheme() in _PER_TENSOR:
        return torch._make_per_tensor_quantized_tensor(
            ints, qweight.q_scale(), qweight.q_zero_point()
        )
    return torch._make_per_channel_quantized_tensor(
        ints,
        qweight.q_per_channel_scales(),
        qweight.q_per_channel_zero_points(),
        qweight.q_per_channel_axis(),
    )


def quantize_weight(float_weight: torch.Tensor, post_process: Any) -> torch.Tensor:
    """Quantize ``float_weight`` with the qparams of an observer that has seen it.

    Per tensor and per channel (affine or symmetric) give ``torch.qint8``/``quint8`` tensors
    with integer zero points; ``per_channel_affine_float_qparams`` (embeddings) gives the
    observer's dtype (``quint8`` or ``quint4x2``) with float zero points.
    """
    scale, zero_point = post_process.calculate_qparams()
    qscheme = post_process.qscheme
    if qscheme in _PER_TENSOR:
        qweight = torch.quantize_per_tensor(
            float_weight, float(scale), int(zero_point), torch.qint8
        )
    elif qscheme in _PER_CHANNEL:
        qweight = torch.quantize_per_channel(
            float_weight,
            scale.to(torch.double),
            zero_point.to(torch.int64),
            int(post_process.ch_axis),
            torch.qint8,
        )
    elif qscheme == torch.per_channel_affine_float_qparams:
        qweight = torch.quantize_per_channel(
            float_weight,
            scale.to(torch.float),
            zero_point.to(torch.float),
            int(post_process.ch_axis),
            post_process.dtype,
        )
    else:
        raise ValueError(
            f"cannot quantize a weight with qscheme {qscheme}; use a per-tensor or per-channel "
            f"weight observer"
        )
    return clamp_weight(qweight, post_process)


def output_qparams(post_process: Any) -> tuple[float, int]:
    """``(scale, zero_point)`` of an output observer, as Python numbers."""
    scale, zero_point = post_process.calculate_qparams()
    return float(scale), int(zero_point)


def observed_output_qparams(mod: Any) -> tuple[float, int]:
    """Output ``(scale, zero_point)`` from ``mod.activation_post_process``, or a
    :class:`FromFloatError` saying that ``mod`` was not prepared and calibrated."""
    observer = getattr(mod, "activation_post_process", None)
    if observer is None or not hasattr(observer, "calculate_qparams"):
        raise FromFloatError(
            f"{type(mod).__name__} has no output observer (activation_post_process); run "
            f"prepare() and calibrate the model before converting it"
        )
    return output_qparams(observer)


def require_observed(mod: Any, cls_name: str, *, qconfig: bool = True) -> None:
    """Raise :class:`FromFloatError` unless ``mod`` went through ``prepare``."""
    if qconfig and getattr(mod, "qconfig", None) is None:
        raise FromFloatError(
            f"{cls_name}.from_float: the float module {type(mod).__name__} has no qconfig; "
            f"set module.qconfig (or use fxquant's prepare/convert) before converting"
        )
    if not hasattr(mod, "activation_post_process"):
        raise FromFloatError(
            f"{cls_name}.from_float: the float module {type(mod).__name__} has no "
            f"activation_post_process observer; run prepare() and calibrate it first"
        )


def require_type(mod: Any, expected: type | tuple[type, ...], cls_name: str) -> None:
    """Raise :class:`FromFloatError` unless ``type(mod)`` is exactly one of ``expected``."""
    types = expected if isinstance(expected, tuple) else (expected,)
    if type_before_parametrizations(mod) not in types:
        names = ", ".join(t.__name__ for t in types)
        raise FromFloatError(
            f"{cls_name}.from_float only converts {names}, got {type(mod).__name__}"
        )


def split_fused(mod: Any) -> tuple[Any, Any]:
    """``(weighted module, following module)`` of a fused float module, ``(mod, None)`` else.

    A fused float module (``ConvReLU2d(conv, relu)``, ``LinearLeakyReLU(linear, leaky)``) is a
    ``Sequential`` container without weights of its own whose first child holds them. QAT
    fused modules hold their weights themselves and are returned unchanged.
    """
    if isinstance(mod, nn.Sequential) and not hasattr(mod, "weight") and len(mod) > 0:
        return mod[0], (mod[1] if len(mod) > 1 else None)
    return mod, None


def unwrap_fused(mod: Any) -> Any:
    """The weighted first child of a fused float module (``ConvReLU2d(conv, relu)`` -> ``conv``);
    any other module unchanged."""
    return split_fused(mod)[0]


def fold_bn_into_weights(mod: Any) -> None:
    """Fold the batch norm of a QAT ``ConvBn*``/``LinearBn1d`` into its weight and bias.

    QAT modules that simulate a fused batch norm keep it as a ``bn`` child; converting them
    needs the folded weights (``w * gamma / sqrt(var + eps)``, bias shifted likewise). Modules
    without such a child are left alone.
    """
    bn = getattr(mod, "bn", None)
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        return
    if bn.running_mean is None or bn.running_var is None:
        raise FromFloatError(
            f"{type(mod).__name__}: its batch norm tracks no running statistics, so it cannot "
            f"be folded into the weights; construct it with track_running_stats=True"
        )
    fuse: Callable[..., tuple[nn.Parameter, nn.Parameter]] = (
        fuse_linear_bn_weights if isinstance(mod, nn.Linear) else fuse_conv_bn_weights
    )
    weight, bias = fuse(
        mod.weight, mod.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    mod.weight, mod.bias = weight, bias


def repr_without_packed_params(module: nn.Module, packed_type: type) -> str:
    """``nn.Module.__repr__`` minus children of ``packed_type`` (packed weights print as the
    whole weight tensor, which drowns the model summary)."""
    extra = module.extra_repr()
    extra_lines = extra.split("\n") if extra else []
    child_lines = [
        f"({name}): " + _addindent(repr(child), 2)
        for name, child in module._modules.items()
        if child is not None and not isinstance(child, packed_type)
    ]
    lines = extra_lines + child_lines
    body = ""
    if len(extra_lines) == 1 and not child_lines:
        body = extra_lines[0]
    elif lines:
        body = "\n  " + "\n  ".join(lines) + "\n"
    return f"{module._get_name()}({body})"
