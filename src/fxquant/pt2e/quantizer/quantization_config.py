"""``QuantizationConfig``: the four specs a quantizer applies to one operator pattern.

A config says how a pattern's input activations, output activation, weight and bias are
quantized; a quantizer (:class:`~fxquant.pt2e.quantizer.xnnpack_quantizer.XNNPACKQuantizer`,
:class:`~fxquant.pt2e.quantizer.x86_inductor_quantizer.X86InductorQuantizer`) holds configs
per scope (global, module type, module name, operator) and reads them through the
``get_*_qspec`` accessors, which also check that a spec fits its role.

Field order is upstream's (``QuantizationConfig(act, act, weight, bias, is_qat)`` works
positionally), as is ``OperatorConfig(config, operators)``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from fxquant.pt2e.quantizer.quantizer import QuantizationSpec

__all__ = [
    "InvalidQuantizationConfigError",
    "OperatorConfig",
    "OperatorPatternType",
    "QuantizationConfig",
    "get_bias_qspec",
    "get_input_act_qspec",
    "get_output_act_qspec",
    "get_weight_qspec",
]

# An operator pattern, e.g. [torch.nn.Conv2d, torch.nn.ReLU] (modules and functions).
OperatorPatternType = typing.Annotated[list[Callable], None]

_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_WEIGHT_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric, None)


class InvalidQuantizationConfigError(ValueError):
    """A spec in a :class:`QuantizationConfig` cannot play the role it was given."""


@dataclass(eq=True, frozen=True)
class QuantizationConfig:
    """Specs for a pattern's input activations, output activation, weight and bias
    (``None``: leave that tensor in float), and whether they are for QAT.

    >>> act = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
    ...                        qscheme=torch.per_tensor_affine,
    ...                        observer_or_fake_quant_ctr=HistogramObserver)
    >>> config = QuantizationConfig(act, act, weight_spec, None)
    """

    input_activation: QuantizationSpec | None
    output_activation: QuantizationSpec | None
    weight: QuantizationSpec | None
    bias: QuantizationSpec | None
    is_qat: bool = False

    def __post_init__(self) -> None:
        for role in ("input_activation", "output_activation", "weight", "bias"):
            spec = getattr(self, role)
            if spec is not None and not isinstance(spec, QuantizationSpec):
                raise InvalidQuantizationConfigError(
                    f"QuantizationConfig.{role} must be a QuantizationSpec or None, "
                    f"got {type(spec).__name__}"
                )
        if not isinstance(self.is_qat, bool):
            raise InvalidQuantizationConfigError(
                f"QuantizationConfig.is_qat must be a bool, got {self.is_qat!r}"
            )


class OperatorConfig(NamedTuple):
    """A config and the operator patterns a quantizer applies it to."""

    config: QuantizationConfig
    operators: list[OperatorPatternType]


def _activation_qspec(config: QuantizationConfig | None, role: str) -> QuantizationSpec | None:
    spec = None if config is None else getattr(config, role)
    if spec is None:
        return None
    if spec.qscheme not in _PER_TENSOR:
        raise InvalidQuantizationConfigError(
            f"QuantizationConfig.{role} must be per-tensor (per_tensor_affine or "
            f"per_tensor_symmetric), got qscheme {spec.qscheme}"
        )
    return spec


def get_input_act_qspec(quantization_config: QuantizationConfig | None) -> QuantizationSpec | None:
    """The input-activation spec of ``quantization_config`` (None if absent); it must be
    per-tensor."""
    return _activation_qspec(quantization_config, "input_activation")


def get_output_act_qspec(quantization_config: QuantizationConfig | None) -> QuantizationSpec | None:
    """The output-activation spec of ``quantization_config`` (None if absent); it must be
    per-tensor."""
    return _activation_qspec(quantization_config, "output_activation")


def get_weight_qspec(quantization_config: QuantizationConfig | None) -> QuantizationSpec | None:
    """The weight spec (None if absent); it must be symmetric, per tensor or per channel
    (or have no qscheme, as float16 weights do)."""
    spec = None if quantization_config is None else quantization_config.weight
    if spec is None:
        return None
    if spec.qscheme not in _WEIGHT_QSCHEMES:
        raise InvalidQuantizationConfigError(
            f"unsupported weight qscheme {spec.qscheme}: weights are quantized "
            "per_tensor_symmetric or per_channel_symmetric"
        )
    return spec


def get_bias_qspec(quantization_config: QuantizationConfig | None) -> QuantizationSpec | None:
    """The bias spec (None if absent); biases stay float (``dtype=torch.float``)."""
    spec = None if quantization_config is None else quantization_config.bias
    if spec is None:
        return None
    if spec.dtype != torch.float:
        raise InvalidQuantizationConfigError(
            f"bias spec dtype must be torch.float (biases are kept in float), got {spec.dtype}"
        )
    return spec
