"""Static quantized activations: ``ReLU6``, ``Hardswish``, ``ELU``, ``LeakyReLU``, ``Sigmoid``,
``Softmax``, ``PReLU``.

Each subclasses its float counterpart (so ``isinstance(m, nn.ReLU6)`` style checks still hold)
and runs the ``torch.ops.quantized`` kernel. Output qparams are stored the way upstream stores
them (buffers for ``Hardswish``/``LeakyReLU``, plain attributes for the others), which keeps
the state dicts interchangeable.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.quantized.utils import observed_output_qparams

__all__ = ["ELU", "Hardswish", "LeakyReLU", "PReLU", "ReLU6", "Sigmoid", "Softmax"]


class ReLU6(nn.ReLU):
    """``min(max(zero_point, x), q(6))`` on a quantized tensor; keeps the input's qparams."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.inplace = inplace

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.relu6(input, self.inplace)

    def _get_name(self) -> str:
        return "QuantizedReLU6"

    @staticmethod
    def from_float(mod: Any, use_precomputed_fake_quant: bool = False) -> ReLU6:
        """Build from a float ``ReLU6`` (no observer needed: the output shares the input's)."""
        return ReLU6(bool(mod.inplace))


class Hardswish(nn.Hardswish):
    """Quantized ``nn.Hardswish`` with output ``scale`` and ``zero_point``."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, scale: float, zero_point: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, device=device, dtype=dtype))
        self.register_buffer("zero_point", torch.tensor(zero_point, device=device, dtype=dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.hardswish(input, self.scale, self.zero_point)

    def _get_name(self) -> str:
        return "QuantizedHardswish"

    @staticmethod
    def from_float(mod: Any, use_precomputed_fake_quant: bool = False) -> Hardswish:
        """Build from an observed float ``Hardswish``."""
        return Hardswish(*observed_output_qparams(mod))

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> Hardswish:
        return cls(float(scale), int(zero_point))


class ELU(nn.ELU):
    """Quantized ``nn.ELU`` with output ``scale`` and ``zero_point``."""

    def __init__(self, scale: float, zero_point: int, alpha: float = 1.0) -> None:
        super().__init__(alpha)
        self.scale = scale
        self.zero_point = zero_point

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.elu(input, self.scale, self.zero_point, self.alpha)

    def _get_name(self) -> str:
        return "QuantizedELU"

    @staticmethod
    def from_float(mod: Any, use_precomputed_fake_quant: bool = False) -> ELU:
        """Build from an observed float ``ELU``."""
        scale, zero_point = observed_output_qparams(mod)
        return ELU(scale, zero_point, float(mod.alpha))

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> ELU:
        return cls(float(scale), int(zero_point), float(mod.alpha))


class LeakyReLU(nn.LeakyReLU):
    """Quantized ``nn.LeakyReLU`` with output ``scale`` and ``zero_point``."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        scale: float,
        zero_point: int,
        negative_slope: float = 1e-2,
        inplace: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(negative_slope, inplace)
        self.register_buffer("scale", torch.tensor(scale, device=device, dtype=dtype))
        self.register_buffer("zero_point", torch.tensor(zero_point, device=device, dtype=dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.leaky_relu(
            input, self.negative_slope, self.inplace, self.scale, self.zero_point
        )

    def _get_name(self) -> str:
        return "QuantizedLeakyReLU"

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> LeakyReLU:
        """Build from an observed float ``LeakyReLU``."""
        scale, zero_point = observed_output_qparams(mod)
        return cls(scale, zero_point, float(mod.negative_slope), bool(mod.inplace))

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> LeakyReLU:
        return cls(float(scale), int(zero_point), float(mod.negative_slope), bool(mod.inplace))


class Sigmoid(nn.Sigmoid):
    """Quantized ``nn.Sigmoid``; the default qconfigs give it fixed output qparams (1/256, 0)."""

    def __init__(self, output_scale: float, output_zero_point: int) -> None:
        super().__init__()
        self.output_scale = output_scale
        self.output_zero_point = output_zero_point

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.sigmoid(input, self.output_scale, self.output_zero_point)

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Sigmoid:
        """Build from an observed float ``Sigmoid``."""
        return cls(*observed_output_qparams(mod))


class Softmax(nn.Softmax):
    """Quantized ``nn.Softmax`` over ``dim`` with output ``scale`` and ``zero_point``."""

    def __init__(self, dim: int | None = None, scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.scale = scale
        self.zero_point = zero_point

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        dim = self.dim
        if dim is None:
            # the legacy implicit-dim rule of nn.Softmax (it warns, as the float module does)
            dim = torch.nn.functional._get_softmax_dim(  # type: ignore[attr-defined]  # private torch helper
                "softmax", input.dim(), 3
            )
        return torch.ops.quantized.softmax(input, dim, self.scale, self.zero_point)

    def _get_name(self) -> str:
        return "QuantizedSoftmax"

    @staticmethod
    def from_float(mod: Any, use_precomputed_fake_quant: bool = False) -> Softmax:
        """Build from an observed float ``Softmax``."""
        scale, zero_point = observed_output_qparams(mod)
        return Softmax(mod.dim, scale, zero_point)

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> Softmax:
        return cls(mod.dim, float(scale), int(zero_point))


def _quantize_prelu_weight(mod: Any) -> torch.Tensor:
    """PReLU's weight quantized per tensor to quint8 with ``mod.qconfig.weight()``."""
    float_weight = mod.weight.float()
    observer = mod.qconfig.weight()
    observer(float_weight)
    if observer.dtype != torch.quint8:
        warnings.warn(
            f"PReLU's weight observer should have dtype torch.quint8 but got {observer.dtype}; "
            f"use default_quint8_weight_qconfig for PReLU",
            stacklevel=3,
        )
    scale, zero_point = observer.calculate_qparams()
    return torch.quantize_per_tensor(float_weight, float(scale), int(zero_point), torch.quint8)


class PReLU(nn.Module):
    """Quantized ``nn.PReLU``: a quint8 slope per channel (or one), output qparams."""

    def __init__(self, output_scale: float, output_zero_point: int, num_parameters: int = 1) -> None:
        super().__init__()
        self.num_parameters = num_parameters
        self.scale = output_scale
        self.zero_point = output_zero_point
        w = torch.randn(num_parameters, dtype=torch.float)
        self.set_weight(torch.quantize_per_tensor(w, scale=1.0, zero_point=0, dtype=torch.quint8))

    def set_weight(self, w: torch.Tensor) -> None:
        """Set the quantized slope(s)."""
        self.weight = w

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.prelu(input, self.weight, self.scale, self.zero_point)

    def _get_name(self) -> str:
        return "QuantizedPReLU"

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> PReLU:
        """Build from an observed float ``PReLU`` whose qconfig has a quint8 weight observer."""
        scale, zero_point = observed_output_qparams(mod)
        qprelu = cls(scale, zero_point, int(mod.num_parameters))
        qprelu.set_weight(_quantize_prelu_weight(mod))
        return qprelu

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> PReLU:
        qprelu = cls(float(scale), int(zero_point), int(mod.num_parameters))
        qprelu.set_weight(_quantize_prelu_weight(mod))
        return qprelu
