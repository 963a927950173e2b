"""QAT ``Conv1d/2d/3d`` against ``torch.ao.nn.qat``."""

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

CONVS = {
    "Conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 11)),
    "Conv2d": (lambda: nn.Conv2d(3, 4, 3, padding=1, groups=1, dilation=2), (2, 3, 9, 9)),
    "Conv3d": (lambda: nn.Conv3d(2, 4, 3, bias=False), (2, 2, 5, 5, 5)),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_trains_like_upstream_and_round_trips(name):
    make, shape = CONVS[name]
    conv = make()
    a, b = copy.deepcopy(conv), copy.deepcopy(conv)
    a.qconfig, b.qconfig = fxquant.get_default_qat_qconfig("x86"), tq.get_default_qat_qconfig("x86")
    ours, theirs = getattr(nnqat, name).from_float(a), getattr(tnnqat, name).from_float(b)
    assert ours.weight is a.weight
    assert_train_lockstep(ours, theirs, lambda step: torch.randn(shape))
    assert repr(ours) == repr(theirs)
    back_ours, back_theirs = ours.to_float(), theirs.to_float()
    assert type(back_ours) is type(back_theirs) is type(conv)
    assert torch.equal(back_ours.weight, back_theirs.weight)


def test_string_padding_is_kept():
    ours = nnqat.Conv2d(3, 4, 3, padding="same", qconfig=fxquant.default_qat_qconfig)
    assert ours(torch.randn(1, 3, 6, 6)).shape == (1, 4, 6, 6)


def test_missing_qconfig_is_reported():
    with pytest.raises(nnqat.QATModuleError, match="qat.Conv2d needs a qconfig"):
        nnqat.Conv2d(3, 4, 3)
