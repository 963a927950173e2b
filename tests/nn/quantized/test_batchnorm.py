"""Quantized BatchNorm2d / BatchNorm3d against torch.ao.nn.quantized (bit-exact)."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized as up_nnq
import torch.ao.quantization as tq
from nn.quantized.oracle import (
    ENGINES,
    assert_same_qtensor,
    assert_same_state_dict,
    observed_pair,
    quantize_input,
    quantized_engine,
    save_load,
)

import fxquant
import fxquant.nn.quantized as nnq
from fxquant.nn._errors import QuantizedInputError
from fxquant.nn.quantized.utils import FromFloatError


def _batch_norm(cls, n=4):
    def make():
        m = cls(n)
        m.eval()
        with torch.no_grad():
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
        return m

    return make


BNS = [
    pytest.param("BatchNorm2d", _batch_norm(torch.nn.BatchNorm2d), (3, 4, 5, 5), id="batch_norm2d"),
    pytest.param("BatchNorm3d", _batch_norm(torch.nn.BatchNorm3d), (2, 4, 3, 3, 3), id="batch_norm3d"),
]


def _pair(name, make, shape):
    x = torch.randn(shape) * 2 + 0.5
    ours_f, theirs_f = observed_pair(make, fxquant.default_qconfig, tq.default_qconfig, x)
    return getattr(nnq, name).from_float(ours_f), getattr(up_nnq, name).from_float(theirs_f), x


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("name", "make", "shape"), BNS)
def test_from_float_output_is_bit_exact_with_upstream(engine, name, make, shape):
    with quantized_engine(engine):
        ours, theirs, x = _pair(name, make, shape)
        qx = quantize_input(x)
        assert_same_qtensor(ours(qx), theirs(qx))


@pytest.mark.parametrize(("name", "make", "shape"), BNS)
def test_state_dict_repr_and_save_load_match_upstream(name, make, shape):
    ours, theirs, x = _pair(name, make, shape)
    qx = quantize_input(x)
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    assert_same_qtensor(save_load(ours, weights_only=False)(qx), ours(qx))
    other_ours, other_theirs, _ = _pair(name, make, shape)
    other_theirs.load_state_dict(ours.state_dict())
    assert_same_qtensor(other_theirs(qx), theirs(qx))
    other_ours.load_state_dict(save_load(theirs.state_dict(), weights_only=True))
    assert_same_qtensor(other_ours(qx), ours(qx))


def test_from_reference_matches_upstream():
    bn = _batch_norm(torch.nn.BatchNorm2d)()
    scale, zero_point = torch.tensor(0.05), torch.tensor(60)
    ours = nnq.BatchNorm2d.from_reference(bn, scale, zero_point)
    theirs = up_nnq.BatchNorm2d.from_reference(bn, scale, zero_point)
    qx = quantize_input(torch.randn(2, 4, 3, 3))
    assert_same_qtensor(ours(qx), theirs(qx))
    # Python numbers work too (upstream fails assigning a float to the buffer)
    assert_same_qtensor(nnq.BatchNorm2d.from_reference(bn, 0.05, 60)(qx), theirs(qx))


def test_float_input_and_missing_observer_are_clear_errors():
    ours, _, x = _pair("BatchNorm2d", _batch_norm(torch.nn.BatchNorm2d), (1, 4, 3, 3))
    with pytest.raises(QuantizedInputError, match="QuantizedBatchNorm2d.*QuantStub"):
        ours(x)
    with pytest.raises(FromFloatError, match="prepare"):
        nnq.BatchNorm2d.from_float(torch.nn.BatchNorm2d(4))
