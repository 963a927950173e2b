"""Shared small models for the report tests."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.report import capture_with_debug_handles


def x86() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


class SmallNet(nn.Module):
    """conv-bn-relu, a depthwise conv, a residual add, a pool, a linear and a softmax (which the
    x86 quantizer leaves in float)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = self.dw(y) + y
        y = torch.nn.functional.max_pool2d(y, 2).mean((2, 3))
        return torch.softmax(self.fc(y), -1)


def quantize(float_gm, quantizer, batches):
    prepared = prepare_pt2e(copy.deepcopy(float_gm), quantizer)
    with torch.no_grad():
        for b in batches:
            prepared(b)
    return convert_pt2e(prepared)


@pytest.fixture(name="x86")
def x86_fixture():
    """A factory of the default x86 quantizer."""
    return x86


@pytest.fixture(name="quantize")
def quantize_fixture():
    """quantize(float_gm, quantizer, batches) -> a converted copy of float_gm."""
    return quantize


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = SmallNet().eval()
    with torch.no_grad():  # a BN with non-trivial statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    batches = list(torch.randn(16, 3, 12, 12).split(8))
    float_gm = capture_with_debug_handles(model, (batches[0],))
    quantized = quantize(float_gm, x86(), batches)
    return model, float_gm, quantized, batches
