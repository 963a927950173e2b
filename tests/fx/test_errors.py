"""Bad input to the FX flow gets errors that say what is wrong and what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxquant
from fxquant.fx.example_values import ExampleInputError
from fxquant.fx.tracer import FxTraceError
from fxquant.quantize_fx import prepare_fx


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a value: not symbolically traceable
            return x
        return -x


class _Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.branchy = _DataDependent()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branchy(self.fc(x))


def _mapping():
    return fxquant.get_default_qconfig_mapping("x86")


def test_untraceable_module_error_names_module_line_and_the_fix():
    with pytest.raises(FxTraceError) as info:
        prepare_fx(_Outer().eval(), _mapping(), (torch.randn(2, 4),))
    message = str(info.value)
    assert "branchy" in message and "_DataDependent" in message
    assert "test_errors.py" in message and "if x.sum() > 0" in message
    assert "set_non_traceable_module_names" in message


def test_non_traceable_module_names_make_it_an_opaque_float_call():
    config = fxquant.fx.PrepareCustomConfig().set_non_traceable_module_names(["branchy"])
    prepared = prepare_fx(_Outer().eval(), _mapping(), (torch.randn(2, 4),), config)
    calls = [n.target for n in prepared.graph.nodes if n.op == "call_module"]
    assert "branchy" in calls
    assert prepared(torch.randn(2, 4)).shape == (2, 4)


def test_non_traceable_module_classes():
    config = fxquant.fx.PrepareCustomConfig().set_non_traceable_module_classes([_DataDependent])
    prepared = prepare_fx(_Outer().eval(), _mapping(), (torch.randn(2, 4),), config)
    assert "branchy" in [n.target for n in prepared.graph.nodes]


def test_module_name_that_matches_nothing():
    mapping = _mapping().set_module_name("fc_typo", None)
    with pytest.raises(ValueError, match=r"fc_typo.*named_modules"):
        prepare_fx(nn.Sequential(nn.Linear(4, 4)).eval(), mapping, (torch.randn(2, 4),))


def test_unknown_key_in_qconfig_dict():
    with pytest.raises(ValueError, match="object_typ"), pytest.warns(FutureWarning):
        prepare_fx(nn.Sequential(nn.Linear(4, 4)).eval(), {"object_typ": []}, (torch.randn(2, 4),))


def test_wrong_example_input_shape_names_the_node():
    with pytest.raises(ExampleInputError, match=r"failed at node _0 .*mat1 and mat2.*example_inputs"):
        prepare_fx(nn.Sequential(nn.Linear(4, 4)).eval(), _mapping(), (torch.randn(2, 5),))


def test_example_inputs_must_be_a_tuple():
    with pytest.raises(TypeError, match="tuple"):
        prepare_fx(nn.Sequential(nn.Linear(4, 4)).eval(), _mapping(), torch.randn(2, 4))


def test_fixed_qparams_op_with_a_plain_qconfig_is_left_float_with_a_warning():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()).eval()
    mapping = fxquant.QConfigMapping().set_global(fxquant.get_default_qconfig("x86"))
    with pytest.warns(UserWarning, match=r"leaves .*in float.*FixedQParams"):
        prepared = prepare_fx(model, mapping, (torch.randn(2, 4),))
    sigmoid = next(n for n in prepared.graph.nodes if n.target == "1")
    assert not any("activation_post_process" in str(u.target) for u in sigmoid.users)


def test_qconfig_the_backend_cannot_honour_leaves_the_op_float_and_says_why():
    qconfig = fxquant.QConfig(
        activation=fxquant.MinMaxObserver.with_args(dtype=torch.qint8),
        weight=fxquant.default_weight_observer,
    )
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    with pytest.warns(UserWarning, match=r"leaves .*in float: .*native"):
        prepared = prepare_fx(model, fxquant.QConfigMapping().set_global(qconfig), (torch.randn(2, 4),))
    assert not [n for n in prepared.graph.nodes if "activation_post_process" in str(n.target)]


def test_static_qconfig_on_an_lstm_is_left_float_naming_the_pattern_and_dtypes():
    model = nn.Sequential(nn.LSTM(4, 4)).eval()
    with pytest.warns(UserWarning, match=r"leaves .*_0.* in float: pattern .*LSTM.*native.*dynamic"):
        prepared = prepare_fx(model, _mapping(), (torch.randn(3, 2, 4),))
    assert not [n for n in prepared.graph.nodes if "activation_post_process" in str(n.target)]


def test_float16_static_qconfig_stays_float_and_says_what_to_use():
    # the native config has no fp16 static patterns (upstream's neither); the legacy test-only
    # config has them and is covered in test_float16.py
    from fxquant.backend_config import native

    config = native.get_native_backend_config()
    mapping = fxquant.QConfigMapping().set_global(fxquant.float16_static_qconfig)
    with pytest.warns(UserWarning, match=r"leaves .*in float: pattern .*Linear.*float16"):
        prepared = prepare_fx(nn.Sequential(nn.Linear(4, 4)).eval(), mapping, (torch.randn(2, 4),),
                              backend_config=config)
    assert not [n for n in prepared.graph.nodes if "activation_post_process" in str(n.target)]
