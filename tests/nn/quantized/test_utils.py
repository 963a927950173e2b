"""fxquant.nn.quantized.utils: weight quantization, fused-module handling, BN folding, repr."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized.modules.utils as up_utils
import torch.ao.quantization as tq
from nn.quantized.oracle import assert_same_qtensor

import fxquant
from fxquant.nn.quantized.utils import (
    FromFloatError,
    fold_bn_into_weights,
    quantize_weight,
    split_fused,
    unwrap_fused,
)

OBSERVERS = [
    pytest.param(fxquant.default_weight_observer, tq.default_weight_observer, id="per_tensor_symmetric"),
    pytest.param(fxquant.default_per_channel_weight_observer, tq.default_per_channel_weight_observer,
                 id="per_channel_symmetric"),
    pytest.param(fxquant.weight_observer_range_neg_127_to_127, tq.weight_observer_range_neg_127_to_127,
                 id="per_tensor_narrow"),
    pytest.param(fxquant.per_channel_weight_observer_range_neg_127_to_127,
                 tq.per_channel_weight_observer_range_neg_127_to_127, id="per_channel_narrow"),
    pytest.param(fxquant.default_float_qparams_observer, tq.default_float_qparams_observer,
                 id="float_qparams_8bit"),
    pytest.param(fxquant.default_float_qparams_observer_4bit, tq.default_float_qparams_observer_4bit,
                 id="float_qparams_4bit"),
]


@pytest.mark.parametrize(("ours_ctor", "theirs_ctor"), OBSERVERS)
def test_quantize_weight_matches_upstream(ours_ctor, theirs_ctor):
    weight = torch.randn(8, 16)
    weight[0, 0] = -5.0
    ours_obs, theirs_obs = ours_ctor(), theirs_ctor()
    ours_obs(weight)
    theirs_obs(weight)
    assert_same_qtensor(
        quantize_weight(weight, ours_obs), up_utils._quantize_weight(weight, theirs_obs)
    )


def test_quantize_weight_rejects_unknown_qscheme():
    observer = fxquant.default_weight_observer()
    observer(torch.randn(3))
    observer.qscheme = "not a qscheme"
    with pytest.raises(ValueError, match="qscheme"):
        quantize_weight(torch.randn(3), observer)


def test_split_fused_takes_apart_containers_but_not_weighted_modules():
    linear, relu = torch.nn.Linear(2, 2), torch.nn.ReLU()
    assert split_fused(torch.nn.Sequential(linear, relu)) == (linear, relu)
    assert unwrap_fused(torch.nn.Sequential(linear)) is linear
    assert split_fused(linear) == (linear, None)


def test_fold_bn_into_weights_matches_eval_conv_bn():
    conv, bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    bn.eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 6, 6)
    expected = bn(conv(x))
    conv.bn = bn  # a QAT ConvBn keeps its batch norm as a ``bn`` child
    fold_bn_into_weights(conv)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, conv.weight, conv.bias), expected)


def test_fold_bn_requires_running_stats():
    linear = torch.nn.Linear(3, 3)
    linear.bn = torch.nn.BatchNorm1d(3, track_running_stats=False)
    with pytest.raises(FromFloatError, match="running statistics"):
        fold_bn_into_weights(linear)


def test_fold_bn_leaves_modules_without_bn_alone():
    linear = torch.nn.Linear(3, 3)
    before = linear.weight.detach().clone()
    fold_bn_into_weights(linear)
    assert torch.equal(linear.weight, before)
