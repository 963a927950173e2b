"""fxquant.nn._errors: the clear errors for float/quantized tensors in the wrong module."""

from __future__ import annotations

import pytest
import torch

from fxquant.nn._errors import QuantizedInputError, check_float_input, check_quantized_input
from fxquant.nn.quantized import Linear


def _qtensor():
    return torch.quantize_per_tensor(torch.randn(2, 3), 0.1, 10, torch.quint8)


def test_quantized_input_passes_and_float_input_names_module_and_stub():
    check_quantized_input(Linear(3, 2), _qtensor())
    with pytest.raises(QuantizedInputError) as info:
        check_quantized_input(Linear(3, 2), torch.randn(2, 3))
    message = str(info.value)
    assert "QuantizedLinear" in message and "QuantStub" in message and "float" in message


def test_float_module_with_quantized_input_suggests_dequant_stub():
    check_float_input(torch.nn.Linear(3, 2), torch.randn(2, 3))
    with pytest.raises(QuantizedInputError, match=r"Linear is a float module.*DeQuantStub"):
        check_float_input(torch.nn.Linear(3, 2), _qtensor())


@pytest.mark.parametrize("bad", [None, 3.0, [1, 2]], ids=["none", "number", "list"])
def test_non_tensor_input_is_described(bad):
    with pytest.raises(QuantizedInputError, match=type(bad).__name__):
        check_quantized_input("my.layer", bad, arg="operand 0")


def test_error_is_a_type_error():
    assert issubclass(QuantizedInputError, TypeError)
