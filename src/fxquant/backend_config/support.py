"""Can a backend honour a qconfig for an op, and if not, why not.

The FX flow asks this for every matched pattern; a pattern whose qconfig no dtype config of
the backend accepts stays in float, and the returned reason is what the user is told.

A qconfig is honoured by a ``DTypeConfig`` when, for each dtype the config names:

=================  ==============================================================
input activation   ``qconfig.activation`` dtype equals it, static/dynamic agrees,
                   and the observer satisfies its constraints
weight             ``qconfig.weight`` dtype equals it and satisfies its constraints
bias               float16 for float16 static qconfigs, else float, equals it
output activation  the activation dtype (float for dynamic qconfigs) equals it and
                   the observer satisfies its constraints
=================  ==============================================================

Constraints apply only when the observer's dtype is the constrained dtype: quant_min/quant_max
inside the bounds, ``eps`` (the smallest scale) at least ``scale_min_lower_bound``, and for
fixed-qparams ops a ``FixedQParamsObserver`` / ``FixedQParamsFakeQuantize`` with exactly the
required scale and zero point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.dtype_config import DTypeConfig, DTypeWithConstraints
from fxquant.backend_config.patterns import Pattern, reverse_sequential_pattern
from fxquant.fake_quantize import FakeQuantizeBase, FixedQParamsFakeQuantize
from fxquant.observers import FixedQParamsObserver
from fxquant.qconfig import QConfigAny

__all__ = [
    "QConfigSupport",
    "UnsupportedQConfigWarning",
    "backend_supports_qconfig",
    "dtype_config_supports",
    "dtype_configs_support",
]


class UnsupportedQConfigWarning(UserWarning):
    """A qconfig the backend cannot honour for an op; the op is left in float."""


class QConfigSupport(NamedTuple):
    """Whether a qconfig is honoured, and if not, why. Unpacks as ``(supported, reason)``
    and is truthy exactly when supported."""

    supported: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.supported


_SUPPORTED = QConfigSupport(True)


@dataclass(frozen=True, kw_only=True)
class _QConfigDTypes:
    """The observers a qconfig builds and the dtypes they imply for an op's tensors."""

    activation: Any
    weight: Any
    input_dtype: torch.dtype | None
    is_dynamic: bool
    weight_dtype: torch.dtype | None
    bias_dtype: torch.dtype
    output_dtype: torch.dtype | None

    @classmethod
    def of(cls, qconfig: Any) -> _QConfigDTypes:
        activation = qconfig.activation() if qconfig.activation is not None else None
        weight = qconfig.weight() if qconfig.weight is not None else None
        input_dtype = getattr(activation, "dtype", None)
        is_dynamic = bool(getattr(activation, "is_dynamic", False))
        weight_dtype = getattr(weight, "dtype", None)
        # dynamic ops return float; without an activation observer the output stays float
        output_dtype = torch.float if is_dynamic or activation is None else input_dtype
        fp16_static = (input_dtype == torch.float16 and weight_dtype == torch.float16
                       and not is_dynamic)
        return cls(activation=activation, weight=weight, input_dtype=input_dtype,
                   is_dynamic=is_dynamic, weight_dtype=weight_dtype,
                   bias_dtype=torch.float16 if fp16_static else torch.float,
                   output_dtype=output_dtype)


def _inner_observer(post_process: Any) -> Any:
    if isinstance(post_process, FakeQuantizeBase):
        return getattr(post_process, "activation_post_process", post_process)
    return post_process


def _range_violation(observer: Any, constraints: DTypeWithConstraints, role: str) -> str | None:
    low, high = constraints.quant_min_lower_bound, constraints.quant_max_upper_bound
    if low is None and high is None:
        return None
    qmin, qmax = getattr(observer, "quant_min", None), getattr(observer, "quant_max", None)
    if (low is not None and qmin is None) or (high is not None and qmax is None):
        return (f"the {role} observer ({type(observer).__name__}) sets no quant_min/quant_max; "
                f"the backend needs them within [{low}, {high}]")
    below = low is not None and qmin is not None and qmin < low
    above = high is not None and qmax is not None and qmax > high
    if below or above:
        return (f"the {role} quantization range [{qmin}, {qmax}] falls outside the "
                f"backend's [{low}, {high}]; set quant_min/quant_max on the observer")
    return None


def _scale_violation(observer: Any, constraints: DTypeWithConstraints, role: str) -> str | None:
    scale_min = constraints.scale_min_lower_bound
    if scale_min is None:
        return None
    eps = getattr(observer, "eps", None)
    if eps is None:
        return (f"the {role} observer ({type(observer).__name__}) sets no eps (smallest scale); "
                f"the backend needs scales >= {scale_min}")
    if float(eps) < scale_min:
        return (f"the {role} observer's eps {float(eps):g} is below the backend's minimum "
                f"scale {scale_min:g}; build the observer with eps={scale_min:g}")
    return None


def _fixed_qparams_violation(post_process: Any, observer: Any,
                             constraints: DTypeWithConstraints, role: str) -> str | None:
    scale, zero_point = constraints.scale_exact_match, constraints.zero_point_exact_match
    if scale is None or zero_point is None:
        return None
    hint = 'use get_default_qconfig_mapping("fbgemm") or another default mapping'
    if not isinstance(post_process, (FixedQParamsObserver, FixedQParamsFakeQuantize)):
        return (f"the op has fixed qparams (scale={scale}, zero_point={zero_point}) but the "
                f"{role} is observed by {type(post_process).__name__}, not a "
                f"FixedQParamsObserver or FixedQParamsFakeQuantize; {hint}")
    # compared in the observer's dtype (float32), as the kernels see them
    if bool((torch.as_tensor(observer.scale) != scale).any()) or \
            bool((torch.as_tensor(observer.zero_point) != zero_point).any()):
        return (f"the {role} fixed qparams (scale={float(observer.scale)}, "
                f"zero_point={int(observer.zero_point)}) differ from the backend's "
                f"(scale={scale}, zero_point={zero_point}); {hint}")
    return None


def _constraint_violation(post_process: Any, constraints: DTypeWithConstraints,
                          role: str) -> str | None:
    """Why ``post_process`` breaks ``constraints``, or None (also when dtypes differ)."""
    if post_process is None or constraints.dtype is None:
        return None
    if getattr(post_process, "dtype", None) != constraints.dtype:
        return None
    observer = _inner_observer(post_process)
    return (_range_violation(observer, constraints, role)
            or _scale_violation(observer, constraints, role)
            or _fixed_qparams_violation(post_process, observer, constraints, role))


def _dtype_mismatch(role: str, qconfig_dtype: Any, backend_dtype: Any) -> str | None:
    if qconfig_dtype == backend_dtype:
        return None
    return f"the qconfig's {role} dtype is {qconfig_dtype}, the backend's is {backend_dtype}"


def _input_violation(q: _QConfigDTypes, dtype_config: DTypeConfig) -> str | None:
    if dtype_config.input_dtype is None:
        return None
    if bool(dtype_config.is_dynamic) != q.is_dynamic:
        wanted = "dynamic" if dtype_config.is_dynamic else "static"
        got = "dynamic" if q.is_dynamic else "static"
        return f"the qconfig is {got} but this backend dtype config is {wanted}"
    return (_dtype_mismatch("input activation", q.input_dtype, dtype_config.input_dtype)
            or _constraint_violation(q.activation, dtype_config.input_dtype_with_constraints,
                                     "input activation"))


def _weight_violation(q: _QConfigDTypes, dtype_config: DTypeConfig) -> str | None:
    if dtype_config.weight_dtype is None:
        return None
    return (_dtype_mismatch("weight", q.weight_dtype, dtype_config.weight_dtype)
            or _constraint_violation(q.weight, dtype_config.weight_dtype_with_constraints,
                                     "weight"))


def _bias_violation(q: _QConfigDTypes, dtype_config: DTypeConfig) -> str | None:
    if dtype_config.bias_dtype is None:
        return None
    return _dtype_mismatch("bias", q.bias_dtype, dtype_config.bias_dtype)


def _output_violation(q: _QConfigDTypes, dtype_config: DTypeConfig) -> str | None:
    if dtype_config.output_dtype is None:
        return None
    return (_dtype_mismatch("output activation", q.output_dtype, dtype_config.output_dtype)
            or _constraint_violation(q.activation, dtype_config.output_dtype_with_constraints,
                                     "output activation"))


def _support(q: _QConfigDTypes, dtype_config: DTypeConfig, check_weight: bool,
             check_bias: bool) -> QConfigSupport:
    reason = (_input_violation(q, dtype_config)
              or (_weight_violation(q, dtype_config) if check_weight else None)
              or (_bias_violation(q, dtype_config) if check_bias else None)
              or _output_violation(q, dtype_config))
    return _SUPPORTED if reason is None else QConfigSupport(False, reason)


def dtype_config_supports(dtype_config: DTypeConfig, qconfig: QConfigAny, *,
                          check_weight: bool = True, check_bias: bool = True) -> QConfigSupport:
    """Whether ``dtype_config`` honours ``qconfig``, with the reason when it does not.

    ``check_weight`` / ``check_bias``: whether the op has a weight / bias the flow quantizes
    (the FX flow checks them only for functionals, whose parameters are graph inputs).
    A ``None`` qconfig (leave in float) is always supported.

    Example::

        >>> ok, reason = dtype_config_supports(default_dynamic_int8_dtype_config, default_qconfig)
        >>> ok, reason
        (False, 'the qconfig is static but this backend dtype config is dynamic')
    """
    if qconfig is None:
        return _SUPPORTED
    return _support(_QConfigDTypes.of(qconfig), dtype_config, check_weight, check_bias)


def dtype_configs_support(dtype_configs: Sequence[DTypeConfig], qconfig: QConfigAny, *,
                          check_weight: bool = True, check_bias: bool = True) -> QConfigSupport:
    """Whether any of ``dtype_configs`` honours ``qconfig``; if none does, the reason lists
    why each one does not."""
    if qconfig is None:
        return _SUPPORTED
    if not dtype_configs:
        return QConfigSupport(False, "the backend lists no dtype configs for it")
    q = _QConfigDTypes.of(qconfig)
    reasons: list[str] = []
    for index, dtype_config in enumerate(dtype_configs):
        support = _support(q, dtype_config, check_weight, check_bias)
        if support.supported:
            return support
        reasons.append(f"[dtype config {index}] {support.reason}")
    return QConfigSupport(False, "no dtype config of the backend accepts the qconfig: "
                                 + "; ".join(reasons))


def _describe(pattern: Pattern) -> str:
    if isinstance(pattern, tuple):
        return "(" + ", ".join(_describe(p) for p in pattern) + ")"
    if isinstance(pattern, str):
        return repr(pattern)
    module = getattr(pattern, "__module__", None)
    name = getattr(pattern, "__qualname__", None) or getattr(pattern, "__name__", None)
    return f"{module}.{name}" if module and name else repr(pattern)


def backend_supports_qconfig(backend_config: BackendConfig, pattern: Pattern,
                             qconfig: QConfigAny, *, check_weight: bool = True,
                             check_bias: bool = True) -> QConfigSupport:
    """Whether ``backend_config`` can run ``pattern`` quantized as ``qconfig`` asks; the
    reason names the pattern and the backend.

    ``pattern`` may be in forward order (``(nn.Conv2d, nn.ReLU)``) or in the reversed
    nested tuple format the matcher uses.

    Example::

        >>> support = backend_supports_qconfig(get_native_backend_config(), nn.Sigmoid,
        ...                                    default_qconfig)
        >>> support.supported
        False
    """
    if qconfig is None:
        return _SUPPORTED
    configs = backend_config._pattern_complex_format_to_config
    config = configs.get(pattern)
    if config is None and isinstance(pattern, tuple) and len(pattern) in (2, 3):
        config = configs.get(reverse_sequential_pattern(pattern))
    where = f"{_describe(pattern)} on backend {backend_config.name!r}"
    if config is None:
        return QConfigSupport(False, f"{where}: the backend has no config for this pattern")
    support = dtype_configs_support(config.dtype_configs, qconfig,
                                    check_weight=check_weight, check_bias=check_bias)
    return support if support.supported else QConfigSupport(False, f"{where}: {support.reason}")
