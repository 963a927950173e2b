"""One-call eager flows: ``quantize`` (static PTQ), ``quantize_qat`` and ``quantize_dynamic``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from fxquant.eager import mappings
from fxquant.eager.convert import convert
from fxquant.eager.prepare import prepare, prepare_qat
from fxquant.eager.propagate import propagate_qconfig_
from fxquant.eager.unused_qconfig import warn_unused_qconfigs
from fxquant.qconfig.defaults import (
    default_dynamic_qconfig,
    float16_dynamic_qconfig,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
)

__all__ = ["default_eval_fn", "quantize", "quantize_dynamic", "quantize_qat"]

_RECURRENT_AND_LINEAR = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.RNNCell, nn.GRUCell)

# dtype -> (the qconfig for a set of types/names, the module types quantized by default)
_DYNAMIC_DEFAULTS: dict[torch.dtype, tuple[Any, tuple[type, ...]]] = {
    torch.qint8: (default_dynamic_qconfig, _RECURRENT_AND_LINEAR),
    torch.float16: (float16_dynamic_qconfig, _RECURRENT_AND_LINEAR),
    torch.quint8: (float_qparams_weight_only_qconfig, (nn.EmbeddingBag, nn.Embedding)),
    torch.quint4x2: (float_qparams_weight_only_qconfig_4bit, (nn.EmbeddingBag,)),
}


def default_eval_fn(model: nn.Module, calib_data: Iterable[tuple[Any, Any]]) -> None:
    """Run ``model`` on the input of every ``(input, target)`` pair of ``calib_data``."""
    for data, _target in calib_data:
        model(data)


def quantize(
    model: nn.Module,
    run_fn: Callable[..., Any],
    run_args: Any,
    mapping: Mapping[Any, Any] | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Post-training static quantization in one call: prepare, ``run_fn(model, *run_args)``
    to calibrate, convert.

    Example::

        model.qconfig = fxquant.get_default_qconfig("x86")
        quantized = fxquant.quantize(model, fxquant.default_eval_fn, [calibration_pairs])
    """
    torch._C._log_api_usage_once("fxquant.eager.quantize")
    if mapping is None:
        mapping = mappings.get_default_static_quant_module_mappings()
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    prepare(model, inplace=True)
    run_fn(model, *run_args)
    convert(model, mapping, inplace=True)
    return model


def quantize_qat(
    model: nn.Module, run_fn: Callable[..., Any], run_args: Any, inplace: bool = False
) -> nn.Module:
    """Quantization-aware training in one call: prepare_qat, ``run_fn(model, *run_args)``
    (the training loop), convert."""
    torch._C._log_api_usage_once("fxquant.eager.quantize_qat")
    if not inplace:
        model = copy.deepcopy(model)
    model.train()
    prepare_qat(model, inplace=True)
    run_fn(model, *run_args)
    convert(model, inplace=True)
    return model


def _is_qconfig(value: Any) -> bool:
    return hasattr(value, "activation") and hasattr(value, "weight")


def _default_dynamic_qconfig(dtype: Any) -> Any:
    if _is_qconfig(dtype):
        return dtype  # fxquant extension: dtype may be the qconfig itself
    if dtype not in _DYNAMIC_DEFAULTS:
        known = ", ".join(str(d) for d in _DYNAMIC_DEFAULTS)
        raise ValueError(
            f"quantize_dynamic has no default qconfig for dtype {dtype}; use one of {known}, "
            "or pass qconfig_spec as a dict of module type/name -> QConfig"
        )
    return _DYNAMIC_DEFAULTS[dtype][0]


def _dynamic_qconfig_dict(qconfig_spec: Any, dtype: Any) -> Mapping[Any, Any]:
    """The ``qconfig_spec`` argument of :func:`quantize_dynamic` as a type/name -> qconfig dict."""
    if qconfig_spec is None:
        qconfig = _default_dynamic_qconfig(dtype)
        types = _DYNAMIC_DEFAULTS[dtype][1] if dtype in _DYNAMIC_DEFAULTS else (nn.Linear,)
        return dict.fromkeys(types, qconfig)
    if isinstance(qconfig_spec, (set, frozenset, list, tuple)):
        return dict.fromkeys(qconfig_spec, _default_dynamic_qconfig(dtype))
    if isinstance(qconfig_spec, Mapping):
        return qconfig_spec
    raise TypeError(
        f"qconfig_spec must be a set of module types/names or a dict of type/name -> QConfig, "
        f"not {type(qconfig_spec).__name__}"
    )


def quantize_dynamic(
    model: nn.Module,
    qconfig_spec: Any = None,
    dtype: Any = torch.qint8,
    mapping: Mapping[Any, Any] | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Dynamic quantization: weights quantized ahead of time, activations at run time.

    Args:
        model: the float model.
        qconfig_spec: which modules to quantize, as
            * ``None``: every ``Linear``/``LSTM``/``GRU``/``*Cell`` (for ``qint8`` and
              ``float16``), or every ``Embedding(Bag)`` (``quint8``, ``quint4x2``);
            * a set of module types and/or qualified names, quantized as ``dtype`` says;
            * a dict of module type/name -> QConfig (``dtype`` is then ignored), e.g.
              ``{nn.Linear: fxquant.per_token_dynamic_qconfig}`` for per-token activations.
        dtype: ``torch.qint8`` (default), ``torch.float16``, ``torch.quint8``,
            ``torch.quint4x2``; or (fxquant extension) a QConfig, used for every entry of a
            set ``qconfig_spec`` (or for every ``nn.Linear`` when ``qconfig_spec`` is None).
        mapping: float module type -> dynamic quantized class (default:
            :func:`get_default_dynamic_quant_module_mappings`).
        inplace: modify ``model`` instead of a deep copy.

    A qconfig given to a module type that has no dynamic quantized version is reported with a
    ``QuantizationWarning`` (that module stays in float).

    Example::

        quantized = fxquant.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    """
    torch._C._log_api_usage_once("fxquant.eager.quantize_dynamic")
    qconfig_dict = _dynamic_qconfig_dict(qconfig_spec, dtype)
    if mapping is None:
        mapping = mappings.get_default_dynamic_quant_module_mappings()
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    propagate_qconfig_(model, qconfig_dict)
    warn_unused_qconfigs(model, set(mapping), flow="quantize_dynamic", kind="dynamic")
    convert(model, mapping, inplace=True)
    return model
