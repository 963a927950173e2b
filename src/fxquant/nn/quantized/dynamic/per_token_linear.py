"""``PerTokenLinear``: a dynamic int8 linear layer with per-token activation scales.

Weights are stored as int8 with one symmetric scale per output channel; on every call the
input is quantized per token (per row) and multiplied with ``torch._int_mm`` (int8 x int8 ->
int32), then rescaled by the outer product of the token and channel scales. The arithmetic is
in :mod:`.per_token_matmul`.

Against float ``nn.Linear`` at MiniLM-L6 shapes (1024 tokens, 384 -> 1536), single-threaded,
it is several times faster; against upstream's dynamic ``Linear`` (one activation scale per
call) it is much more accurate on transformer activations, whose outlier tokens would
otherwise set the scale of every other token.

State is plain tensors (``weight_int8``, ``weight_scale``, ``bias_float``) plus the activation
mapping (``_extra_state``), so its state dict loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxquant.nn._errors import check_float_input
from fxquant.nn.qat.dynamic import Linear as QATDynamicLinear
from fxquant.nn.quantized.dynamic.per_token_matmul import (
    int8_linear_per_token,
    quantize_per_token_int8,
)
from fxquant.numerics.affine import quantize_per_channel
from fxquant.observers.defaults import default_per_channel_weight_observer
from fxquant.qconfig.per_token import PerTokenDynamicObserver

__all__ = ["PerTokenLinear", "PerTokenLinearError"]

_SYMMETRIC_WEIGHT_QSCHEMES = (torch.per_channel_symmetric, torch.per_tensor_symmetric)


class PerTokenLinearError(ValueError):
    """A module or weight that ``PerTokenLinear`` cannot be built from."""


_FLOAT_LINEARS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.modules.linear.NonDynamicallyQuantizableLinear,
    QATDynamicLinear,
)


class PerTokenLinear(nn.Module):
    """Dynamic int8 linear: per-token activations, per-channel symmetric int8 weights.

    Args:
        in_features, out_features: as ``nn.Linear``.
        bias_: whether the layer has a bias (upstream's dynamic ``Linear`` spelling).
        symmetric_activations: per-token symmetric (zero point 0) activations instead of the
            default asymmetric ones (each token's ``[min, max]`` with a zero point).

    Inputs of any shape ``(..., in_features)`` and float dtype; the output has the input's
    dtype (the arithmetic runs in float32 / int32).

    >>> qlinear = PerTokenLinear.from_float(float_linear)   # float_linear.qconfig optional
    >>> y = qlinear(torch.randn(8, 128, 384))
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor
    bias_float: torch.Tensor | None
    weight_row_sum: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_: bool = True,
        *,
        symmetric_activations: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.symmetric_activations = symmetric_activations
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        bias = torch.zeros(out_features, dtype=torch.float32) if bias_ else None
        self.register_buffer("bias_float", bias)
        # derived from weight_int8; rebuilt on load, not saved
        self.register_buffer(
            "weight_row_sum", torch.zeros(out_features, dtype=torch.int32), persistent=False
        )

    def _get_name(self) -> str:
        return "DynamicQuantizedPerTokenLinear"

    def extra_repr(self) -> str:
        mapping = "symmetric" if self.symmetric_activations else "asymmetric"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"activations=per-token {mapping} int8, weight=per-channel symmetric int8, "
            f"bias={self.bias_float is not None}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_input(self, x)
        if x.shape[-1] != self.in_features:
            raise RuntimeError(
                f"{self._get_name()}: input has {x.shape[-1]} features in its last dimension, "
                f"expected in_features={self.in_features}"
            )
        leading = x.shape[:-1]
        x2d = x.reshape(-1, self.in_features).to(torch.float32)
        xq = quantize_per_token_int8(x2d, symmetric=self.symmetric_activations)
        row_sum = None if self.symmetric_activations else self.weight_row_sum
        y = int8_linear_per_token(xq, self.weight_int8, self.weight_scale, self.bias_float, row_sum)
        return y.reshape(*leading, self.out_features).to(x.dtype)

    # ----- weights -------------------------------------------------------------------------

    def set_int8_weight(
        self, weight_int8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        """Install an ``(out, in)`` int8 weight, its ``(out,)`` scales and a float bias."""
        if weight_int8.shape != (self.out_features, self.in_features):
            raise PerTokenLinearError(
                f"{self._get_name()}: weight of shape {tuple(weight_int8.shape)} does not fit "
                f"in_features={self.in_features}, out_features={self.out_features}"
            )
        self.weight_int8 = weight_int8.to(torch.int8).contiguous()
        scale = torch.as_tensor(weight_scale, dtype=torch.float32).reshape(-1)
        self.weight_scale = scale.expand(self.out_features).contiguous()
        self.bias_float = None if bias is None else bias.detach().to(torch.float32).clone()
        self.weight_row_sum = self.weight_int8.sum(dim=1, dtype=torch.int32)

    def set_weight_bias(self, qweight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Install a symmetric ``torch.qint8`` weight (per channel along axis 0, or per
        tensor), as upstream's quantized linear modules accept."""
        qscheme = qweight.qscheme()
        if qscheme == torch.per_channel_symmetric or qscheme == torch.per_channel_affine:
            if qweight.q_per_channel_axis() != 0:
                raise PerTokenLinearError("per-channel weights must be quantized along axis 0")
            scale, zero_point = qweight.q_per_channel_scales(), qweight.q_per_channel_zero_points()
        else:
            scale = torch.tensor([qweight.q_scale()])
            zero_point = torch.tensor([qweight.q_zero_point()])
        if bool((zero_point != 0).any()):
            raise PerTokenLinearError(
                f"{self._get_name()} needs symmetric weights (zero point 0), got zero points "
                f"{zero_point.tolist()[:4]}...; use a symmetric weight observer such as "
                f"default_per_channel_weight_observer"
            )
        self.set_int8_weight(qweight.int_repr(), scale, bias)

    def weight(self) -> torch.Tensor:
        """The weight as a per-channel ``torch.qint8`` tensor (upstream's accessor)."""
        return torch._make_per_channel_quantized_tensor(
            self.weight_int8,
            self.weight_scale.to(torch.float64),
            torch.zeros(self.out_features, dtype=torch.int64),
            0,
        )

    def bias(self) -> torch.Tensor | None:
        """The float bias."""
        return self.bias_float

    def get_extra_state(self) -> dict[str, bool]:
        """The activation mapping travels with the weights (``<prefix>_extra_state``)."""
        return {"symmetric_activations": self.symmetric_activations}

    def set_extra_state(self, state: dict[str, bool]) -> None:
        self.symmetric_activations = bool(state["symmetric_activations"])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self.weight_row_sum = self.weight_int8.sum(dim=1, dtype=torch.int32)

    # ----- construction ---------------------------------------------------------------------

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize a float ``nn.Linear``.

        The weight observer is ``mod.qconfig.weight()`` (it must be symmetric int8, per
        channel or per tensor), else ``default_per_channel_weight_observer``; the activation
        mapping comes from a :class:`~fxquant.qconfig.per_token.PerTokenDynamicObserver`
        activation constructor, else asymmetric (as ``per_token_dynamic_qconfig``). With
        ``use_precomputed_fake_quant=True`` a QAT module's ``weight_fake_quant`` supplies the
        weight qparams instead.
        """
        if type(mod) not in _FLOAT_LINEARS:
            names = ", ".join(t.__name__ for t in _FLOAT_LINEARS)
            raise PerTokenLinearError(
                f"{cls.__name__}.from_float converts {names}, got {type(mod).__name__}"
            )
        assert isinstance(mod, nn.Linear)
        qconfig = getattr(mod, "qconfig", None)
        weight = mod.weight.detach().float()
        observer: Any
        if use_precomputed_fake_quant and hasattr(mod, "weight_fake_quant"):
            # QAT already chose the weight's qparams
            observer = mod.weight_fake_quant
            _check_weight_observer(observer, cls.__name__)
        else:
            weight_ctr = getattr(qconfig, "weight", None) or default_per_channel_weight_observer
            observer = weight_ctr()
            _check_weight_observer(observer, cls.__name__)
            observer(weight)
        scale, zero_point = observer.calculate_qparams()
        scale = scale.reshape(-1).expand(mod.out_features).contiguous()
        zero_point = zero_point.reshape(-1).expand(mod.out_features).contiguous()
        weight_int8 = quantize_per_channel(
            weight, scale, zero_point, 0, int(observer.quant_min), int(observer.quant_max),
            torch.int8,
        )  # fmt: skip
        activation_ctr = getattr(qconfig, "activation", None)
        activation = activation_ctr() if activation_ctr is not None else None
        symmetric = isinstance(activation, PerTokenDynamicObserver) and activation.symmetric
        qlinear = cls(
            mod.in_features, mod.out_features, mod.bias is not None,
            symmetric_activations=symmetric,
        )  # fmt: skip
        qlinear.set_int8_weight(weight_int8, scale, mod.bias)
        return qlinear

    @classmethod
    def from_reference(cls, ref_qlinear: Any, *, symmetric_activations: bool = False) -> Any:
        """Build from a reference quantized linear (``get_quantized_weight()`` must give a
        symmetric ``torch.qint8`` weight)."""
        qlinear = cls(
            ref_qlinear.in_features, ref_qlinear.out_features, ref_qlinear.bias is not None,
            symmetric_activations=symmetric_activations,
        )  # fmt: skip
        qlinear.set_weight_bias(ref_qlinear.get_quantized_weight(), ref_qlinear.bias)
        return qlinear


def _check_weight_observer(observer: Any, owner: str) -> None:
    dtype = getattr(observer, "dtype", None)
    qscheme = getattr(observer, "qscheme", None)
    if dtype != torch.qint8 or qscheme not in _SYMMETRIC_WEIGHT_QSCHEMES:
        raise PerTokenLinearError(
            f"{owner} needs a symmetric torch.qint8 weight observer (per channel or per "
            f"tensor), got dtype={dtype}, qscheme={qscheme}; use "
            f"default_per_channel_weight_observer (as per_token_dynamic_qconfig does)"
        )
