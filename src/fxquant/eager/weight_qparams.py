"""The weight-qparams dictionary that reference modules are built from."""

from __future__ import annotations

from typing import Any

import torch

from fxquant.observers.misc import PlaceholderObserver

__all__ = ["get_qparam_dict"]

_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_PER_CHANNEL = (
    torch.per_channel_affine,
    torch.per_channel_affine_float_qparams,
    torch.per_channel_symmetric,
)


def get_qparam_dict(observer_or_fake_quant: Any) -> dict[str, Any]:
    """``{"qscheme", "dtype", "scale", "zero_point", "axis"?, "quant_min"?, "quant_max"?}`` of a
    calibrated weight observer or fake-quantizer.

    Symmetric schemes are reported as affine (quantized tensors have no symmetric scheme); a
    placeholder observer (or one without a qscheme) gives only ``{"qscheme": None, "dtype"}``.

    Raises:
        ValueError: the qscheme is neither per tensor nor per channel.
    """
    qscheme = getattr(observer_or_fake_quant, "qscheme", None)
    dtype = observer_or_fake_quant.dtype
    if not qscheme or isinstance(observer_or_fake_quant, PlaceholderObserver):
        return {"qscheme": None, "dtype": dtype}
    qparams: dict[str, Any] = {"dtype": dtype}
    if qscheme in _PER_TENSOR:
        qparams["qscheme"] = torch.per_tensor_affine
    elif qscheme in _PER_CHANNEL:
        symmetric = qscheme == torch.per_channel_symmetric
        qparams["qscheme"] = torch.per_channel_affine if symmetric else qscheme
        qparams["axis"] = observer_or_fake_quant.ch_axis
    else:
        raise ValueError(f"Unrecognized qscheme {qscheme} on {type(observer_or_fake_quant)}")
    scale, zero_point = observer_or_fake_quant.calculate_qparams()
    qparams["scale"] = scale
    qparams["zero_point"] = zero_point
    for bound in ("quant_min", "quant_max"):
        if hasattr(observer_or_fake_quant, bound):
            qparams[bound] = getattr(observer_or_fake_quant, bound)
    return qparams
