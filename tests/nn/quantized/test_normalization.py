"""Quantized LayerNorm / GroupNorm / InstanceNorm1d/2d/3d against upstream (bit-exact)."""

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


def _layer_norm():
    m = torch.nn.LayerNorm([6])
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
    return m


NORMS = [
    ("layer_norm", "LayerNorm", _layer_norm, (3, 5, 6)),
    ("group_norm", "GroupNorm", lambda: torch.nn.GroupNorm(2, 4), (3, 4, 5, 5)),
    ("instance_norm1d", "InstanceNorm1d", lambda: torch.nn.InstanceNorm1d(4, affine=True), (3, 4, 7)),
    ("instance_norm2d", "InstanceNorm2d", lambda: torch.nn.InstanceNorm2d(4), (3, 4, 5, 5)),
    ("instance_norm3d", "InstanceNorm3d", lambda: torch.nn.InstanceNorm3d(4, affine=True), (2, 4, 3, 3, 3)),
]
IDS = [n[0] for n in NORMS]
PARAMS = [n[1:] for n in NORMS]


def _pair(name, make, shape):
    x = torch.randn(shape) * 2 + 0.5
    ours_f, theirs_f = observed_pair(make, fxquant.default_qconfig, tq.default_qconfig, x)
    return getattr(nnq, name).from_float(ours_f), getattr(up_nnq, name).from_float(theirs_f), x


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("name", "make", "shape"), PARAMS, ids=IDS)
def test_from_float_output_is_bit_exact_with_upstream(engine, name, make, shape):
    with quantized_engine(engine):
        ours, theirs, x = _pair(name, make, shape)
        qx = quantize_input(x)
        assert_same_qtensor(ours(qx), theirs(qx))


@pytest.mark.parametrize(("name", "make", "shape"), PARAMS, ids=IDS)
def test_state_dict_repr_and_save_load_match_upstream(name, make, shape):
    ours, theirs, x = _pair(name, make, shape)
    qx = quantize_input(x)
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    assert_same_qtensor(save_load(ours, weights_only=False)(qx), ours(qx))

    # state dicts cross over: a second, differently calibrated pair takes the first's state
    other_ours, other_theirs, _ = _pair(name, make, shape)
    other_theirs.load_state_dict(ours.state_dict())
    assert_same_qtensor(other_theirs(qx), theirs(qx))
    other_ours.load_state_dict(save_load(theirs.state_dict(), weights_only=True))
    assert_same_qtensor(other_ours(qx), ours(qx))


@pytest.mark.parametrize(("name", "make", "shape"), PARAMS, ids=IDS)
def test_float_input_raises_clear_error(name, make, shape):
    ours, _, x = _pair(name, make, shape)
    with pytest.raises(QuantizedInputError, match="QuantStub"):
        ours(x)


def test_from_float_without_observer_is_a_clear_error():
    from fxquant.nn.quantized.utils import FromFloatError

    with pytest.raises(FromFloatError, match="prepare"):
        nnq.LayerNorm.from_float(torch.nn.LayerNorm(4))
