"""The fxquant.nn.quantized package: upstream's names, lazy subpackages, whole-model pickles."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized as up_nnq
from nn.quantized.oracle import quantize_input, save_load, small_quantized_model

import fxquant.nn as fnn
import fxquant.nn.quantized as nnq

# MultiheadAttention needs a quantizable MHA, which fxquant does not have yet; MaxPool2d is
# upstream's re-export of torch.nn.MaxPool2d (not in its __all__ either)
NOT_HERE = {"MultiheadAttention", "MaxPool2d"}


@pytest.mark.parametrize("name", sorted(set(up_nnq.__all__) - NOT_HERE))
def test_upstream_name_exists(name):
    assert name in nnq.__all__
    assert isinstance(getattr(nnq, name), type)


def test_quantized_lstm_resolves_to_the_converted_quantizable_lstm():
    from fxquant.nn.quantizable.quantized_lstm import LSTM

    assert nnq.LSTM is LSTM
    with pytest.raises(NotImplementedError, match="observed"):
        nnq.LSTM.from_float(torch.nn.LSTM(2, 2))


def test_subpackages_import_lazily():
    assert fnn.quantized is nnq
    assert nnq.reference.Linear(2, 2)._get_name() == "QuantizedLinear(Reference)"
    with pytest.raises(AttributeError, match="no attribute"):
        nnq.not_a_module  # noqa: B018


def test_whole_model_torch_save_load_is_bit_exact():
    model = small_quantized_model()
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(save_load(model, weights_only=False)(x), model(x))


def test_quantized_model_runs_on_quantized_input_only():
    model = small_quantized_model()
    with pytest.raises(TypeError, match="QuantizedConv2d"):
        model[1](torch.randn(1, 3, 4, 4))
    assert model[1](quantize_input(torch.randn(1, 3, 4, 4))).is_quantized
