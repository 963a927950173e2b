"""Fuser methods equal upstream's: same fused module types, same folded numbers."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

from fxquant.eager import (
    EagerModeError,
    MatchAllNode,
    NoFuserMethodError,
    fuse_conv_bn,
    fuse_conv_bn_relu,
    fuse_convtranspose_bn,
    fuse_linear_bn,
    get_fuser_method,
    get_fuser_method_new,
)


def _bn(cls, n):
    bn = cls(n)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return bn


SEQUENCES = {
    "conv1d-bn": (lambda: (nn.Conv1d(3, 4, 3), _bn(nn.BatchNorm1d, 4)), (2, 3, 9)),
    "conv2d-bn": (lambda: (nn.Conv2d(3, 4, 3), _bn(nn.BatchNorm2d, 4)), (2, 3, 9, 9)),
    "conv3d-bn": (lambda: (nn.Conv3d(3, 4, 3), _bn(nn.BatchNorm3d, 4)), (2, 3, 5, 5, 5)),
    "conv2d-bn-relu": (
        lambda: (nn.Conv2d(3, 4, 3), _bn(nn.BatchNorm2d, 4), nn.ReLU()), (2, 3, 9, 9)),
    "conv1d-bn-relu": (
        lambda: (nn.Conv1d(3, 4, 3), _bn(nn.BatchNorm1d, 4), nn.ReLU()), (2, 3, 9)),
    "conv2d-relu": (lambda: (nn.Conv2d(3, 4, 3), nn.ReLU()), (2, 3, 9, 9)),
    "linear-bn": (lambda: (nn.Linear(6, 4), _bn(nn.BatchNorm1d, 4)), (5, 6)),
    "linear-relu": (lambda: (nn.Linear(6, 4), nn.ReLU()), (5, 6)),
    "bn2d-relu": (lambda: (_bn(nn.BatchNorm2d, 3), nn.ReLU()), (2, 3, 4, 4)),
    "bn3d-relu": (lambda: (_bn(nn.BatchNorm3d, 3), nn.ReLU()), (2, 3, 4, 4, 4)),
    "convtranspose2d-bn": (
        lambda: (nn.ConvTranspose2d(3, 4, 3), _bn(nn.BatchNorm2d, 4)), (2, 3, 5, 5)),
}
QAT_UNSUPPORTED = {"convtranspose2d-bn"}


def _build(name, training):
    torch.manual_seed(0)
    modules = SEQUENCES[name][0]()
    return [m.train(training) for m in modules]


@pytest.mark.parametrize("is_qat", [False, True], ids=["ptq", "qat"])
@pytest.mark.parametrize("name", list(SEQUENCES), ids=list(SEQUENCES))
def test_fuser_method_matches_upstream(name, is_qat):
    if is_qat and name in QAT_UNSUPPORTED:
        with pytest.raises(NoFuserMethodError, match="QAT"):
            get_fuser_method(tuple(type(m) for m in _build(name, True)))(True, *_build(name, True))
        return
    ours_modules, upstream_modules = _build(name, is_qat), _build(name, is_qat)
    types = tuple(type(m) for m in ours_modules)
    ours = get_fuser_method(types)(is_qat, *ours_modules)
    theirs = tq.get_fuser_method(types)(is_qat, *upstream_modules)
    assert type(ours).__name__ == type(theirs).__name__
    assert [type(c).__name__ for c in ours.children()] == [
        type(c).__name__ for c in theirs.children()
    ]
    x = torch.randn(SEQUENCES[name][1])
    ours.eval()
    theirs.eval()
    assert torch.equal(ours(x), theirs(x))


def test_folded_conv_bn_equals_conv_then_bn():
    conv, bn = _build("conv2d-bn", False)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(fuse_conv_bn(False, conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "fuser, modules",
    [
        (fuse_conv_bn, lambda: (nn.Conv2d(1, 2, 1).train(), nn.BatchNorm2d(2).eval())),
        (fuse_conv_bn_relu,
         lambda: (nn.Conv2d(1, 2, 1).eval(), nn.BatchNorm2d(2).eval(), nn.ReLU().train())),
        (fuse_linear_bn, lambda: (nn.Linear(1, 2).eval(), nn.BatchNorm1d(2).train())),
        (fuse_convtranspose_bn,
         lambda: (nn.ConvTranspose2d(1, 2, 1).eval(), nn.BatchNorm2d(2).train())),
    ],
    ids=["conv-bn", "conv-bn-relu", "linear-bn", "convtranspose-bn"],
)
def test_mixed_train_eval_modes_are_rejected(fuser, modules):
    with pytest.raises(EagerModeError, match="same mode"):
        fuser(False, *modules())


@pytest.mark.parametrize(
    "bn, match",
    [(nn.BatchNorm2d(3), "num_features=3"), (nn.BatchNorm2d(2, affine=False), "affine=True")],
    ids=["channel-mismatch", "no-affine"],
)
def test_qat_fusion_checks_the_batch_norm(bn, match):
    with pytest.raises(EagerModeError, match=match):
        fuse_conv_bn(True, nn.Conv2d(1, 2, 1), bn)


def test_unknown_sequence_has_no_fuser_method():
    with pytest.raises(NoFuserMethodError, match="Conv2d, ReLU6"):
        get_fuser_method((nn.Conv2d, nn.ReLU6))
    with pytest.raises(AssertionError):  # upstream's exception type still catches it
        get_fuser_method((nn.Conv2d, nn.ReLU6))


def test_additional_mapping_wins_over_default():
    def custom(is_qat, conv, relu):
        return nn.Identity()

    assert get_fuser_method((nn.Conv2d, nn.ReLU), {(nn.Conv2d, nn.ReLU): custom}) is custom


@pytest.mark.parametrize(
    "pattern, key",
    [
        ((nn.ReLU, nn.Conv2d), (nn.ReLU, nn.Conv2d)),
        ((nn.ReLU, nn.Linear), (nn.ReLU, MatchAllNode)),
        ((nn.Tanh, (nn.BatchNorm2d, nn.Conv2d)), (MatchAllNode, (nn.BatchNorm2d, nn.Conv2d))),
    ],
    ids=["exact", "wildcard-last", "nested-wildcard-first"],
)
def test_get_fuser_method_new_prefers_the_most_specific_key(pattern, key):
    table = {
        (nn.ReLU, nn.Conv2d): "exact",
        (nn.ReLU, MatchAllNode): "relu-any",
        (MatchAllNode, (nn.BatchNorm2d, nn.Conv2d)): "any-bn-conv",
    }
    assert get_fuser_method_new(pattern, table) == table[key]


def test_get_fuser_method_new_without_match_raises():
    with pytest.raises(NoFuserMethodError):
        get_fuser_method_new((nn.Tanh, nn.Linear), {(nn.ReLU, nn.Conv2d): "x"})


@pytest.mark.parametrize("kind", ["conv2d", "conv_transpose2d", "linear"])
def test_folding_equals_torchs_and_leaves_the_originals_alone(kind):
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    from fxquant.eager import fuse_conv_bn, fuse_convtranspose_bn, fuse_linear_bn

    torch.manual_seed(0)
    layer, bn = {
        "conv2d": (nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)),
        "conv_transpose2d": (nn.ConvTranspose2d(3, 6, 3), nn.BatchNorm2d(6)),
        "linear": (nn.Linear(5, 6), nn.BatchNorm1d(6)),
    }[kind]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    layer.eval(), bn.eval()
    weight_before = layer.weight.detach().clone()
    ours = {"conv2d": fuse_conv_bn, "conv_transpose2d": fuse_convtranspose_bn, "linear": fuse_linear_bn}[kind](
        False, layer, bn)
    theirs = (fuse_linear_bn_eval(layer, bn) if kind == "linear"
              else fuse_conv_bn_eval(layer, bn, transpose=kind == "conv_transpose2d"))
    assert type(ours) is type(layer)
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    assert ours._parameters is not layer._parameters and ours._modules is not layer._modules
    assert torch.equal(layer.weight, weight_before)  # the original keeps its weights


def test_folding_train_mode_modules_says_call_eval():
    from fxquant.eager import EagerModeError, fuse_conv_bn

    with pytest.raises(EagerModeError, match="model.eval"):
        fuse_conv_bn(False, nn.Conv2d(3, 6, 3).train(), nn.BatchNorm2d(6).train())
