"""Clear errors for tensors that reach a module of the wrong kind.

Upstream lets a float tensor flow into a quantized kernel (or a quantized tensor into
a float one) and surfaces the dispatcher's "Could not run 'aten::...' with arguments
from the 'QuantizedCPU' backend". These helpers check the input first and raise an
error that names the module and the missing ``QuantStub`` / ``DeQuantStub``.

Example::

    def forward(self, x):
        check_quantized_input(self, x)
        ...
"""

from __future__ import annotations

import torch

__all__ = [
    "QuantizedInputError",
    "check_float_input",
    "check_quantized_input",
]


class QuantizedInputError(TypeError):
    """A float tensor reached a quantized module, or a quantized tensor a float one."""


def _module_label(module: torch.nn.Module | str) -> str:
    if isinstance(module, str):
        return module
    return module._get_name()  # e.g. "QuantizedLinear"; what the module prints as


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {'quantized' if x.is_quantized else 'float'} tensor of dtype {x.dtype}"
    return f"an object of type {type(x).__name__}"


def check_quantized_input(module: torch.nn.Module | str, x: object, *, arg: str = "input") -> None:
    """Raise ``QuantizedInputError`` unless ``x`` is a quantized tensor.

    ``module`` is the quantized module (or its name) that is about to run a
    quantized kernel on ``x``; the message names it and suggests the missing
    ``QuantStub`` (or ``torch.quantize_per_tensor``) in front of it.
    """
    if isinstance(x, torch.Tensor) and x.is_quantized:
        return
    label = _module_label(module)
    raise QuantizedInputError(
        f"{label} is a quantized module but its {arg} is {_describe(x)}. "
        f"Quantize the {arg} first: put a QuantStub (fxquant.nn.quantized.Quantize after "
        f"convert) before {label}, or call torch.quantize_per_tensor(x, scale, zero_point, "
        f"torch.quint8) on it."
    )


def check_float_input(module: torch.nn.Module | str, x: object, *, arg: str = "input") -> None:
    """Raise ``QuantizedInputError`` if ``x`` is a quantized tensor.

    ``module`` is a float module (or its name); the message names it and
    suggests the missing ``DeQuantStub`` (or ``x.dequantize()``) in front of it.
    """
    if not (isinstance(x, torch.Tensor) and x.is_quantized):
        return
    label = _module_label(module)
    raise QuantizedInputError(
        f"{label} is a float module but its {arg} is {_describe(x)}. "
        f"Dequantize the {arg} first: put a DeQuantStub (fxquant.nn.quantized.DeQuantize "
        f"after convert) before {label}, or call x.dequantize() on it."
    )
