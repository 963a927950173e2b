"""QAT fused modules against ``torch.ao.nn.intrinsic.qat``: identical outputs, gradients and
BN statistics while training, BN folding in ``to_float``, state dicts, freeze/update."""

from __future__ import annotations

import collections
import copy

import pytest
import torch
import torch.ao.nn.intrinsic as tnni
import torch.ao.nn.intrinsic.qat as tnniqat
import torch.ao.quantization as tq
from nn.qat.lockstep import assert_train_lockstep
from torch import nn

import fxquant
import fxquant.nn.intrinsic as nni
import fxquant.nn.intrinsic.qat as nniqat

CONV_BN = {
    "ConvBn1d": (lambda b: (nn.Conv1d(3, 4, 3, bias=b), nn.BatchNorm1d(4)), (4, 3, 9)),
    "ConvBn2d": (lambda b: (nn.Conv2d(3, 4, 3, bias=b), nn.BatchNorm2d(4)), (4, 3, 7, 7)),
    "ConvBn3d": (lambda b: (nn.Conv3d(2, 4, 3, bias=b), nn.BatchNorm3d(4)), (3, 2, 5, 5, 5)),
    "ConvBnReLU1d": (
        lambda b: (nn.Conv1d(3, 4, 3, bias=b), nn.BatchNorm1d(4), nn.ReLU()),
        (4, 3, 9),
    ),
    "ConvBnReLU2d": (
        lambda b: (nn.Conv2d(3, 4, 3, bias=b), nn.BatchNorm2d(4), nn.ReLU()),
        (4, 3, 7, 7),
    ),
    "ConvBnReLU3d": (
        lambda b: (nn.Conv3d(2, 4, 3, bias=b), nn.BatchNorm3d(4), nn.ReLU()),
        (3, 2, 5, 5, 5),
    ),
    "ConvReLU1d": (lambda b: (nn.Conv1d(3, 4, 3, bias=b), nn.ReLU()), (4, 3, 9)),
    "ConvReLU2d": (lambda b: (nn.Conv2d(3, 4, 3, bias=b), nn.ReLU()), (4, 3, 7, 7)),
    "ConvReLU3d": (lambda b: (nn.Conv3d(2, 4, 3, bias=b), nn.ReLU()), (3, 2, 5, 5, 5)),
    "LinearReLU": (lambda b: (nn.Linear(6, 5, bias=b), nn.ReLU()), (8, 6)),
    "LinearBn1d": (lambda b: (nn.Linear(6, 5, bias=b), nn.BatchNorm1d(5)), (8, 6)),
}


def _pair(name: str, bias: bool, *, training: bool = True) -> tuple[nn.Module, nn.Module]:
    make, _ = CONV_BN[name]
    parts = make(bias)
    for part in parts:
        if isinstance(part, nn.modules.batchnorm._BatchNorm):
            # non-trivial statistics and affine parameters
            part.running_mean.uniform_(-0.5, 0.5)
            part.running_var.uniform_(0.5, 2.0)
            part.weight.data.uniform_(0.5, 1.5)
            part.bias.data.uniform_(-0.2, 0.2)
    ours_float = getattr(nni, name)(*copy.deepcopy(parts))
    theirs_float = getattr(tnni, name)(*copy.deepcopy(parts))
    # as propagate_qconfig_ does: the container and its parts (upstream reads the parts')
    for module in ours_float.modules():
        module.qconfig = fxquant.get_default_qat_qconfig("x86")
    for module in theirs_float.modules():
        module.qconfig = tq.get_default_qat_qconfig("x86")
    ours_float.train(training)
    theirs_float.train(training)
    ours = getattr(nniqat, name).from_float(ours_float)
    theirs = getattr(tnniqat, name).from_float(theirs_float)
    return ours, theirs


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", list(CONV_BN))
def test_trains_like_upstream(name, bias):
    ours, theirs = _pair(name, bias)
    _, shape = CONV_BN[name]
    assert_train_lockstep(ours, theirs, lambda step: torch.randn(shape) * (1 + step))
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("name", [n for n in CONV_BN if "Bn" in n and "Linear" not in n])
def test_slow_path_matches_upstream(name):
    ours, theirs = _pair(name, True)
    ours._enable_slow_path_for_better_numerical_stability = True
    theirs._enable_slow_path_for_better_numerical_stability = True
    _, shape = CONV_BN[name]
    assert_train_lockstep(ours, theirs, lambda step: torch.randn(shape), steps=2)
    ours.eval(), theirs.eval()
    x = torch.randn(shape)
    assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("name", list(CONV_BN))
def test_to_float_folds_bn_like_upstream(name):
    ours, theirs = _pair(name, True)
    _, shape = CONV_BN[name]
    for _ in range(2):  # move the BN statistics
        x = torch.randn(shape)
        ours(x), theirs(x)
    back_ours, back_theirs = ours.to_float(), theirs.to_float()
    assert type(back_ours).__name__ == type(back_theirs).__name__
    x = torch.randn(shape)
    assert torch.equal(back_ours.eval()(x), back_theirs.eval()(x))


@pytest.mark.parametrize("name", ["ConvBn2d", "ConvBnReLU2d", "LinearBn1d"])
def test_freeze_bn_stats_keeps_running_statistics(name):
    ours, theirs = _pair(name, True)
    _, shape = CONV_BN[name]
    if name == "LinearBn1d":
        ours.freeze_bn_stats()
        theirs.freeze_bn_stats()
    else:
        ours.apply(nniqat.freeze_bn_stats)
        theirs.apply(tnniqat.freeze_bn_stats)
    before = ours.bn.running_mean.clone()
    x = torch.randn(shape)
    assert torch.equal(ours(x), theirs(x))
    assert torch.equal(ours.bn.running_mean, before)
    ours.train()  # a frozen BN stays in eval mode
    assert ours.freeze_bn and not ours.bn.training
    ours.update_bn_stats()
    ours(x)
    assert not torch.equal(ours.bn.running_mean, before)


def test_bn_stat_switches_ignore_other_modules():
    linear = nn.Linear(2, 2)
    nniqat.freeze_bn_stats(linear)
    nniqat.update_bn_stats(linear)
    assert linear.training


@pytest.mark.parametrize("name", ["ConvBn2d", "LinearBn1d", "ConvReLU2d"])
def test_state_dict_loads_both_ways(name):
    ours, theirs = _pair(name, True)
    _, shape = CONV_BN[name]
    x = torch.randn(shape)
    ours(x), theirs(x)
    fresh_ours, fresh_theirs = _pair(name, True)
    fresh_ours.load_state_dict(theirs.state_dict())
    fresh_theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval(), fresh_ours.eval(), fresh_theirs.eval()
    assert torch.equal(fresh_ours(x), theirs(x))
    assert torch.equal(fresh_theirs(x), ours(x))


def test_version_1_state_dict_with_gamma_beta_loads():
    ours, _ = _pair("ConvBn2d", True)
    state = ours.state_dict()
    v1 = collections.OrderedDict(
        (k.replace("bn.weight", "gamma").replace("bn.bias", "beta").replace("bn.", ""), v)
        for k, v in state.items()
    )
    v1._metadata = copy.deepcopy(state._metadata)  # type: ignore[attr-defined]
    v1._metadata[""]["version"] = 1  # type: ignore[attr-defined]
    fresh, _ = _pair("ConvBn2d", True)
    fresh.load_state_dict(v1)
    assert torch.equal(fresh.bn.weight, ours.bn.weight)
    assert torch.equal(fresh.bn.running_var, ours.bn.running_var)


def test_wrong_float_module_is_reported():
    conv = nn.Conv2d(3, 4, 3)
    conv.qconfig = fxquant.default_qat_qconfig
    with pytest.raises(AssertionError, match="qat.ConvBn2d.from_float converts .*ConvBn2d"):
        nniqat.ConvBn2d.from_float(conv)


def test_torch_save_round_trip(tmp_path):
    ours, _ = _pair("ConvBnReLU2d", True)
    ours.eval()
    x = torch.randn(2, 3, 7, 7)
    y = ours(x)
    torch.save(ours, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert torch.equal(loaded(x), y)
