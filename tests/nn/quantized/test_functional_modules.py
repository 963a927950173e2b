"""FloatFunctional / FXFloatFunctional / QFunctional against torch.ao.nn.quantized."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized as up_nnq
import torch.ao.quantization as tq
from nn.quantized.oracle import (
    ENGINES,
    assert_same_qtensor,
    assert_same_state_dict,
    quantize_input,
    quantized_engine,
    save_load,
)

import fxquant
import fxquant.nn.quantized as nnq
from fxquant.nn._errors import QuantizedInputError
from fxquant.nn.quantized.utils import FromFloatError

OPS = ["add", "mul", "cat", "add_relu", "add_scalar", "mul_scalar", "matmul"]


def _call(module, op, x, y):
    if op == "cat":
        return module.cat([x, y], dim=1)
    if op.endswith("_scalar"):
        return getattr(module, op)(x, 0.75)
    if op == "matmul":
        return module.matmul(x, y.transpose(0, 1))
    return getattr(module, op)(x, y)


@pytest.mark.parametrize("op", OPS)
def test_float_functional_computes_like_torch_and_observes(op):
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    ours, theirs = nnq.FloatFunctional(), up_nnq.FloatFunctional()
    assert torch.equal(_call(ours, op, x, y), _call(theirs, op, x, y))
    assert torch.equal(_call(nnq.FXFloatFunctional(), op, x, y), _call(theirs, op, x, y))


def _observed_pair(op):
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    ours_f, theirs_f = nnq.FloatFunctional(), up_nnq.FloatFunctional()
    ours_f.activation_post_process = fxquant.MinMaxObserver()
    theirs_f.activation_post_process = tq.MinMaxObserver()
    for module in (ours_f, theirs_f):
        module.add(x, y)  # calibrates the output observer (the scalar ops observe nothing)
        _call(module, op, x, y)
    return nnq.QFunctional.from_float(ours_f), up_nnq.QFunctional.from_float(theirs_f), x, y


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("op", OPS)
def test_qfunctional_is_bit_exact_with_upstream(engine, op):
    with quantized_engine(engine):
        ours, theirs, x, y = _observed_pair(op)
        assert (ours.scale, ours.zero_point) == (theirs.scale, theirs.zero_point)
        qx, qy = quantize_input(x), quantize_input(y)
        assert_same_qtensor(_call(ours, op, qx, qy), _call(theirs, op, qx, qy))


def test_qfunctional_state_dict_repr_and_save_load():
    ours, theirs, x, y = _observed_pair("add")
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    fresh_theirs = up_nnq.QFunctional()
    fresh_theirs.load_state_dict(ours.state_dict())
    assert (fresh_theirs.scale, fresh_theirs.zero_point) == (ours.scale, ours.zero_point)
    fresh_ours = nnq.QFunctional()
    fresh_ours.load_state_dict(save_load(theirs.state_dict(), weights_only=True))
    assert (fresh_ours.scale, fresh_ours.zero_point) == (theirs.scale, theirs.zero_point)
    qx, qy = quantize_input(x), quantize_input(y)
    assert_same_qtensor(save_load(ours, weights_only=False).add(qx, qy), ours.add(qx, qy))


def test_forward_is_not_callable():
    for module in (nnq.FloatFunctional(), nnq.FXFloatFunctional(), nnq.QFunctional()):
        with pytest.raises(RuntimeError, match="add"):
            module(torch.randn(2))


def test_float_operand_into_qfunctional_names_the_operand():
    q = quantize_input(torch.randn(3))
    with pytest.raises(QuantizedInputError, match="operand 1.*QuantStub"):
        nnq.QFunctional().add(q, torch.randn(3))


def test_from_float_requires_float_functional():
    with pytest.raises(FromFloatError, match="FloatFunctional"):
        nnq.QFunctional.from_float(nnq.FXFloatFunctional())


def test_from_float_of_an_unprepared_float_functional_is_a_clear_error():
    with pytest.raises(FromFloatError, match="activation_post_process"):
        nnq.QFunctional.from_float(nnq.FloatFunctional())
