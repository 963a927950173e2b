"""Build one observer (PTQ) or fake-quantizer (QAT) per planned group, from its root spec."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxquant.engine.derived import DerivedObserverOrFakeQuantize
from fxquant.engine.errors import AnnotationError
from fxquant.engine.plan import ObserverGroup, ObserverPlan, site_name
from fxquant.fake_quantize import FixedQParamsFakeQuantize
from fxquant.numerics.dtypes import calculate_qmin_qmax, is_float_qdtype
from fxquant.observers import FixedQParamsObserver
from fxquant.pt2e.quantizer.quantizer import (
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
)

__all__ = ["build_observers"]


def build_observers(plan: ObserverPlan, *, is_qat: bool) -> list[nn.Module]:
    """One module per group, indexed like ``plan.groups``. Derived observers are built after
    the groups they derive from."""
    built: dict[int, nn.Module] = {}
    for group in plan.groups:
        if not isinstance(group.spec, DerivedQuantizationSpec):
            built[group.index] = _build_direct(group, is_qat=is_qat)
    for group in plan.groups:
        if isinstance(group.spec, DerivedQuantizationSpec):
            built[group.index] = _build_derived(group, group.spec, plan, built)
    return [built[g.index] for g in plan.groups]


_PER_TENSOR_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)


def _spec_kwargs(spec: QuantizationSpec | DerivedQuantizationSpec) -> dict[str, Any]:
    # Only what the spec sets. A channel axis only means something for a per-channel scheme:
    # per-tensor specs may carry one (XNNPACK's per-tensor weights do), but per-tensor
    # observers do not take it.
    kwargs: dict[str, Any] = {"dtype": spec.dtype}
    for attr in ("quant_min", "quant_max", "qscheme"):
        value = getattr(spec, attr)
        if value is not None:
            kwargs[attr] = value
    if spec.ch_axis is not None and spec.qscheme not in _PER_TENSOR_QSCHEMES:
        kwargs["ch_axis"] = spec.ch_axis
    if spec.is_dynamic:
        kwargs["is_dynamic"] = True
    return kwargs


def _build_direct(group: ObserverGroup, *, is_qat: bool) -> nn.Module:
    spec = group.spec
    if isinstance(spec, FixedQParamsQuantizationSpec):
        return _build_fixed(spec, is_qat=is_qat)
    assert isinstance(spec, QuantizationSpec)
    try:
        return spec.observer_or_fake_quant_ctr(**_spec_kwargs(spec))
    except TypeError as e:
        raise AnnotationError(
            f"could not build the observer for {site_name(group.members[0])} from "
            f"{spec.observer_or_fake_quant_ctr!r} with the spec's fields: {e}"
        ) from e


def _build_fixed(spec: FixedQParamsQuantizationSpec, *, is_qat: bool) -> nn.Module:
    quant_min, quant_max = spec.quant_min, spec.quant_max
    if quant_min is None or quant_max is None:
        if is_float_qdtype(spec.dtype):
            raise AnnotationError(f"fixed qparams need an integer dtype, got {spec.dtype}")
        quant_min, quant_max = calculate_qmin_qmax(None, None, False, spec.dtype, False)
    kwargs: dict[str, Any] = {
        "scale": spec.scale, "zero_point": spec.zero_point, "dtype": spec.dtype,
        "quant_min": quant_min, "quant_max": quant_max,
    }
    if spec.qscheme is not None:
        kwargs["qscheme"] = spec.qscheme
    observer = FixedQParamsObserver.with_args(**kwargs)
    return FixedQParamsFakeQuantize(observer=observer) if is_qat else observer()


def _build_derived(
    group: ObserverGroup,
    spec: DerivedQuantizationSpec,
    plan: ObserverPlan,
    built: dict[int, nn.Module],
) -> nn.Module:
    sources = []
    for site in spec.derived_from:
        if site not in plan.group_of:
            raise AnnotationError(
                f"{site_name(group.members[0])} derives its quantization from "
                f"{site_name(site)}, which is not annotated"
            )
        source_group = plan.group_of[site]
        if source_group not in built:
            raise AnnotationError(f"{site_name(group.members[0])} derives from another derived spec")
        sources.append(built[source_group])
    kwargs = _spec_kwargs(spec)
    kwargs.pop("is_dynamic", None)
    return DerivedObserverOrFakeQuantize(
        obs_or_fqs=sources, derive_qparams_fn=spec.derive_qparams_fn, **kwargs
    )
