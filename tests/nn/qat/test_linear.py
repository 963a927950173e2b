"""QAT ``Linear`` against ``torch.ao.nn.qat.Linear``: same training steps, conversions and
state dicts."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.qat as tnnqat
import torch.ao.quantization as tq
from nn.qat.lockstep import assert_train_lockstep
from torch import nn

import fxquant
import fxquant.nn.qat as nnqat

QCONFIGS = {
    "per_tensor": (fxquant.default_qat_qconfig, tq.default_qat_qconfig),
    "per_channel_x86": (fxquant.get_default_qat_qconfig("x86"), tq.get_default_qat_qconfig("x86")),
}


def _pair(qconfig_name: str, bias: bool = True) -> tuple[nn.Module, nn.Module]:
    ours_qc, theirs_qc = QCONFIGS[qconfig_name]
    float_linear = nn.Linear(6, 5, bias=bias)
    a, b = copy.deepcopy(float_linear), copy.deepcopy(float_linear)
    a.qconfig, b.qconfig = ours_qc, theirs_qc
    return nnqat.Linear.from_float(a), tnnqat.Linear.from_float(b)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("qconfig_name", list(QCONFIGS))
def test_trains_like_upstream(qconfig_name, bias):
    ours, theirs = _pair(qconfig_name, bias)
    assert_train_lockstep(ours, theirs, lambda step: torch.randn(4, 6) * (step + 1))
    assert repr(ours) == repr(theirs)


def test_from_float_shares_parameters_and_to_float_copies_them():
    float_linear = nn.Linear(6, 5)
    float_linear.qconfig = fxquant.default_qat_qconfig
    qat = nnqat.Linear.from_float(float_linear)
    assert qat.weight is float_linear.weight and qat.bias is float_linear.bias
    back = qat.to_float()
    assert type(back) is nn.Linear
    assert torch.equal(back.weight, qat.weight) and back.weight is not qat.weight


def test_state_dict_loads_both_ways():
    ours, theirs = _pair("per_channel_x86")
    x = torch.randn(4, 6)
    ours(x), theirs(x)  # observers record something
    fresh_ours, fresh_theirs = _pair("per_channel_x86")
    fresh_theirs.load_state_dict(ours.state_dict())
    fresh_ours.load_state_dict(theirs.state_dict())
    assert torch.equal(fresh_ours(x), theirs(x))
    assert torch.equal(fresh_theirs(x), ours(x))


def test_fused_linear_relu_is_unwrapped():
    import fxquant.nn.intrinsic as nni
    import fxquant.nn.intrinsic.qat as nniqat

    fused = nni.LinearReLU(nn.Linear(6, 5), nn.ReLU())
    fused.qconfig = fxquant.default_qat_qconfig
    qat = nniqat.LinearReLU.from_float(fused)
    assert qat.weight is fused[0].weight
    assert bool((qat(torch.randn(3, 6)) >= 0).all())
    assert type(qat.to_float()) is nni.LinearReLU


def test_missing_qconfig_is_reported():
    with pytest.raises(nnqat.QATModuleError, match="needs a qconfig"):
        nnqat.Linear(3, 2)
    with pytest.raises(AssertionError, match="has no qconfig"):
        nnqat.Linear.from_float(nn.Linear(3, 2))


def test_wrong_float_type_is_reported():
    conv = nn.Conv2d(1, 1, 1)
    conv.qconfig = fxquant.default_qat_qconfig
    with pytest.raises(nnqat.QATModuleError, match=r"converts torch.nn.modules.linear.Linear"):
        nnqat.Linear.from_float(conv)


def test_torch_save_round_trip(tmp_path):
    ours, _ = _pair("per_tensor")
    x = torch.randn(4, 6)
    y = ours(x)
    path = tmp_path / "qat_linear.pt"
    torch.save(ours, path)
    loaded = torch.load(path, weights_only=False)
    assert torch.equal(loaded(x), y)
