"""fxquant.pt2e.learnable_fake_quantize: LearnableFakeQuantize is fxquant's, and the
module-wide range-learning switches toggle it (and nothing else) as torchao's do."""

from __future__ import annotations

import torch
from torch import nn

from fxquant.fake_quantize import FakeQuantize
from fxquant.observers import MovingAverageMinMaxObserver
from fxquant.pt2e.learnable_fake_quantize import (
    LearnableFakeQuantize,
    disable_range_learning,
    enable_range_learning,
)


def _model() -> nn.Module:
    lfq = LearnableFakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255)
    return nn.Sequential(nn.Linear(4, 4), lfq, FakeQuantize())


def test_enable_range_learning_learns_and_stops_the_observer():
    model = _model()
    lfq, fq = model[1], model[2]
    model(torch.randn(8, 4))  # observer estimate first
    estimate = lfq.scale.detach().clone()
    model.apply(enable_range_learning)
    assert lfq.learning_enabled[0] == 1 and lfq.static_enabled[0] == 0
    assert lfq.scale.requires_grad and lfq.zero_point.requires_grad
    assert lfq.fake_quant_enabled[0] == 1
    assert fq.observer_enabled[0] == 1  # other fake-quantizers untouched
    model(torch.randn(8, 4) * 10).sum().backward()
    assert lfq.scale.grad is not None
    assert torch.equal(lfq.scale.detach(), estimate)  # the observer no longer overwrites it


def test_disable_range_learning_freezes_the_parameters():
    model = _model()
    model.apply(enable_range_learning)
    model.apply(disable_range_learning)
    lfq = model[1]
    assert lfq.learning_enabled[0] == 0
    assert not lfq.scale.requires_grad and not lfq.zero_point.requires_grad
