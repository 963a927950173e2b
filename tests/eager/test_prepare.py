"""prepare / prepare_qat / add_quant_dequant put the same observers at the same places as
upstream, and report qconfigs that quantize nothing."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import fxquant
import fxquant.eager as fe
from fxquant.eager import EagerModeError
from fxquant.observers import QuantizationWarning


def _observers(model):
    """{module name: (observer class name, hook kind)} for every observed module."""
    found = {}
    for name, module in model.named_modules():
        observer = getattr(module, "activation_post_process", None)
        if observer is None or isinstance(observer, nn.Identity):
            continue
        pre = any("pre_hook" in fn.__name__ for fn in module._forward_pre_hooks.values())
        found[name] = (type(observer).__name__, "pre" if pre else "post")
    return found


def _types(model):
    return {name: type(m).__name__ for name, m in model.named_modules()}


QCONFIGS = {
    "minmax-per-channel": (fxquant.default_per_channel_qconfig, tq.default_per_channel_qconfig),
    "x86-histogram": (fxquant.get_default_qconfig("x86"), tq.get_default_qconfig("x86")),
    "memoryless": (
        fxquant.QConfig(
            activation=fxquant.MovingAverageMinMaxObserver.with_args(averaging_constant=1),
            weight=fxquant.default_weight_observer),
        tq.QConfig(
            activation=tq.MovingAverageMinMaxObserver.with_args(averaging_constant=1),
            weight=tq.default_weight_observer)),
}


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("qconfig", list(QCONFIGS), ids=list(QCONFIGS))
def test_observers_match_upstream(ours_and_upstream, models, qconfig, fused):
    ours, theirs = (m.eval() for m in ours_and_upstream(models.ConvBnReLUNet))
    if fused:
        ours = fe.fuse_modules(ours, models.FUSE_GROUPS)
        theirs = tq.fuse_modules(theirs, models.FUSE_GROUPS)
    ours.qconfig, theirs.qconfig = QCONFIGS[qconfig]
    prepared, expected = fe.prepare(ours), tq.prepare(theirs)
    assert _observers(prepared) == _observers(expected)
    assert "quant" in _observers(prepared) and "dequant" not in _observers(prepared)
    assert not hasattr(ours.conv1, "activation_post_process")  # not in place
    x = torch.rand(8, 1, 8, 8)
    assert torch.equal(prepared(x), expected(x))  # observers pass values through
    if qconfig == "minmax-per-channel":
        for name in _observers(prepared):
            ours_obs = prepared.get_submodule(name).activation_post_process
            theirs_obs = expected.get_submodule(name).activation_post_process
            assert torch.equal(ours_obs.min_val, theirs_obs.min_val), name
            assert torch.equal(ours_obs.max_val, theirs_obs.max_val), name


def test_float_functional_gets_its_observer_and_dropout_none():
    class Net(nn.Module):
        def __init__(self, ns, functional):
            super().__init__()
            self.quant = ns.QuantStub()
            self.drop = nn.Dropout()
            self.add = functional()

        def forward(self, x):
            x = self.quant(x)
            return self.add.add(self.drop(x), x)

    ours = Net(fe, fxquant.nn.quantized.FloatFunctional).eval()
    theirs = Net(tq, torch.ao.nn.quantized.FloatFunctional).eval()
    ours.qconfig, theirs.qconfig = fxquant.default_qconfig, tq.default_qconfig
    prepared, expected = fe.prepare(ours), tq.prepare(theirs)
    assert _observers(prepared) == _observers(expected)
    assert type(prepared.add.activation_post_process).__name__ == "MinMaxObserver"
    assert not hasattr(prepared.drop, "activation_post_process")


def test_non_leaf_module_list_observes_whole_module():
    block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return self.block(x)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = block

        def forward(self, x):
            return self.inner(x)

    model = Wrapper()
    model.qconfig = fxquant.default_qconfig
    prepared = fe.prepare(model, observer_non_leaf_module_list={Block})
    assert "block" in _observers(prepared)
    assert "block.inner.0" not in _observers(prepared)


def test_allow_list_limits_observed_types(ours_and_upstream, models):
    ours, theirs = ours_and_upstream(models.MLP)
    ours.qconfig, theirs.qconfig = fxquant.default_qconfig, tq.default_qconfig
    prepared = fe.prepare(ours, allow_list={nn.Linear})
    expected = tq.prepare(theirs, allow_list={nn.Linear})
    assert set(_observers(prepared)) == set(_observers(expected)) == {"fc1", "fc2"}


def test_user_hooks_run_after_the_observer():
    model = nn.Sequential(nn.Linear(4, 4))
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(m.activation_post_process.max_val))
    model.qconfig = fxquant.default_qconfig
    prepared = fe.prepare(model, inplace=True)
    assert prepared is model
    model(torch.randn(2, 4))
    assert torch.isfinite(seen[0])


def test_no_qconfig_warns():
    with pytest.warns(QuantizationWarning, match="None of the submodules got a qconfig"):
        fe.prepare(nn.Sequential(nn.Linear(2, 2)))


def test_qconfig_on_unquantizable_module_is_reported():
    model = nn.Sequential(fe.QuantStub(), nn.Linear(4, 4), nn.GELU(), fe.DeQuantStub())
    model[2].qconfig = fxquant.default_qconfig
    with pytest.warns(QuantizationWarning, match=r"'2' \(GELU\).*no static quantized version"):
        fe.prepare(model)


def test_global_qconfig_is_not_reported():
    model = nn.Sequential(fe.QuantStub(), nn.Linear(4, 4), nn.GELU(), fe.DeQuantStub())
    model.qconfig = fxquant.default_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationWarning)
        fe.prepare(model)


def test_prepare_qat_matches_upstream(ours_and_upstream, models):
    ours, theirs = ours_and_upstream(models.ConvBnReLUNet)
    ours = fe.fuse_modules_qat(ours.train(), models.FUSE_GROUPS)
    theirs = tq.fuse_modules_qat(theirs.train(), models.FUSE_GROUPS)
    ours.qconfig = fxquant.get_default_qat_qconfig("x86")
    theirs.qconfig = tq.get_default_qat_qconfig("x86")
    prepared, expected = fe.prepare_qat(ours), tq.prepare_qat(theirs)
    assert _types(prepared) == _types(expected)
    assert _observers(prepared) == _observers(expected)
    x = torch.rand(8, 1, 8, 8)
    assert torch.equal(prepared(x), expected(x))


def test_prepare_qat_fixed_qparams_for_sigmoid():
    model = nn.Sequential(fe.QuantStub(), nn.Linear(4, 4), nn.Sigmoid(), fe.DeQuantStub())
    model.qconfig = fxquant.get_default_qat_qconfig("x86")
    prepared = fe.prepare_qat(model.train())
    observer = prepared[2].activation_post_process
    assert type(observer).__name__ == "FixedQParamsFakeQuantize"
    assert float(observer.scale) == 1.0 / 256.0


def test_prepare_qat_needs_training_mode():
    model = nn.Sequential(nn.Linear(2, 2)).eval()
    model.qconfig = fxquant.get_default_qat_qconfig("x86")
    with pytest.raises(EagerModeError, match="model.train"):
        fe.prepare_qat(model)


def test_add_quant_dequant_matches_upstream():
    def build(ns_qconfig):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
        model[0].qconfig = ns_qconfig
        model[1][0].qconfig = ns_qconfig
        return model

    ours = fe.add_quant_dequant(build(fxquant.default_qconfig))
    theirs = tq.add_quant_dequant(build(tq.default_qconfig))
    assert _types(ours) == _types(theirs)
    leaf = nn.Linear(2, 2)
    leaf.qconfig = fxquant.default_qconfig
    wrapped = fe.add_quant_dequant(leaf)
    assert isinstance(wrapped, fe.QuantWrapper) and wrapped.module is leaf
