"""Quantized activations against torch.ao.nn.quantized (same kernels: bit-exact)."""

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

ACTIVATIONS = [
    ("relu6", "ReLU6", lambda: torch.nn.ReLU6()),
    ("hardswish", "Hardswish", lambda: torch.nn.Hardswish()),
    ("elu", "ELU", lambda: torch.nn.ELU(alpha=0.7)),
    ("leaky_relu", "LeakyReLU", lambda: torch.nn.LeakyReLU(0.05)),
    ("sigmoid", "Sigmoid", lambda: torch.nn.Sigmoid()),
    ("softmax", "Softmax", lambda: torch.nn.Softmax(dim=1)),
    ("dropout", "Dropout", lambda: torch.nn.Dropout(0.3)),
]
IDS = [a[0] for a in ACTIVATIONS]


# sigmoid and softmax get fixed [0, 1] output qparams (scale 1/256), as the default qconfig
# mappings give them; qnnpack's sigmoid accepts no other output scale
FIXED_0TO1 = {"Sigmoid", "Softmax"}


def _qconfigs(name):
    if name in FIXED_0TO1:
        return (
            fxquant.QConfig(activation=fxquant.default_fixed_qparams_range_0to1_observer,
                            weight=fxquant.default_weight_observer),
            tq.QConfig(activation=tq.default_fixed_qparams_range_0to1_observer,
                       weight=tq.default_weight_observer),
        )
    return fxquant.default_qconfig, tq.default_qconfig


def _pair(name, make, x):
    ours_f, theirs_f = observed_pair(make, *_qconfigs(name), x)
    return getattr(nnq, name).from_float(ours_f), getattr(up_nnq, name).from_float(theirs_f)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("name", "make"), [a[1:] for a in ACTIVATIONS], ids=IDS)
def test_from_float_output_is_bit_exact_with_upstream(engine, name, make):
    with quantized_engine(engine):
        x = torch.randn(4, 10) * 3
        ours, theirs = _pair(name, make, x)
        qx = quantize_input(x)
        assert_same_qtensor(ours(qx), theirs(qx))


@pytest.mark.parametrize(("name", "make"), [a[1:] for a in ACTIVATIONS], ids=IDS)
def test_state_dict_repr_and_save_load_match_upstream(name, make):
    x = torch.randn(4, 10) * 3
    ours, theirs = _pair(name, make, x)
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    qx = quantize_input(x)
    assert_same_qtensor(save_load(ours, weights_only=False)(qx), ours(qx))


@pytest.mark.parametrize(("name", "args"), [("Hardswish", (0.1, 3)), ("LeakyReLU", (0.1, 3, 0.2))])
def test_buffer_qparams_load_both_ways(name, args):
    ours, theirs = getattr(nnq, name)(*args), getattr(up_nnq, name)(*args)
    qx = quantize_input(torch.randn(3, 5))
    fresh_theirs = getattr(up_nnq, name)(1.0, 0, *args[2:])  # slope is not state
    fresh_theirs.load_state_dict(ours.state_dict())
    assert_same_qtensor(fresh_theirs(qx), theirs(qx))
    fresh_ours = getattr(nnq, name)(1.0, 0, *args[2:])
    fresh_ours.load_state_dict(theirs.state_dict())
    assert_same_qtensor(fresh_ours(qx), ours(qx))


def test_prelu_matches_upstream():
    make = lambda: torch.nn.PReLU(6)
    x = torch.randn(2, 6, 4)
    # quint8 weights as default_quint8_weight_qconfig, MinMax activations (fxquant's histogram
    # observer is deliberately not upstream's)
    ours_f, theirs_f = observed_pair(
        make,
        fxquant.QConfig(activation=fxquant.MinMaxObserver, weight=fxquant.MinMaxObserver),
        tq.QConfig(activation=tq.MinMaxObserver, weight=tq.MinMaxObserver),
        x,
    )
    with torch.no_grad():
        for m in (ours_f, theirs_f):
            m.weight.copy_(torch.linspace(-0.5, 0.9, 6))
    ours, theirs = nnq.PReLU.from_float(ours_f), up_nnq.PReLU.from_float(theirs_f)
    qx = quantize_input(x)
    assert_same_qtensor(ours.weight, theirs.weight)
    assert_same_qtensor(ours(qx), theirs(qx))
    assert repr(ours) == repr(theirs)


def test_prelu_warns_on_non_quint8_weight_observer():
    ours_f, _ = observed_pair(lambda: torch.nn.PReLU(), fxquant.default_qconfig, tq.default_qconfig,
                              torch.randn(3, 4))
    with pytest.warns(UserWarning, match="quint8"):
        nnq.PReLU.from_float(ours_f)


@pytest.mark.parametrize(("name", "args"), [
    ("ReLU6", ()), ("Hardswish", (0.1, 0)), ("ELU", (0.1, 0)), ("LeakyReLU", (0.1, 0)),
    ("Sigmoid", (1 / 256, 0)), ("Softmax", (1, 1 / 256, 0)), ("PReLU", (0.1, 0)),
])
def test_float_input_raises_clear_error(name, args):
    with pytest.raises(QuantizedInputError, match="QuantStub"):
        getattr(nnq, name)(*args)(torch.randn(2, 3))


@pytest.mark.parametrize("name", ["Hardswish", "ELU", "LeakyReLU", "Sigmoid", "Softmax"])
def test_from_float_without_observer_is_a_clear_error(name):
    from fxquant.nn.quantized.utils import FromFloatError

    float_cls = {"Hardswish": torch.nn.Hardswish, "ELU": torch.nn.ELU, "LeakyReLU": torch.nn.LeakyReLU,
                 "Sigmoid": torch.nn.Sigmoid, "Softmax": torch.nn.Softmax}[name]
    with pytest.raises(FromFloatError, match="prepare"):
        getattr(nnq, name).from_float(float_cls())
