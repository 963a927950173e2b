"""Small models annotated by the X86 quantizer, and hand-made cost tables, for planner tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule

from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.speed.cost_model import CostTable, UnitCost
from fxquant.speed.plan_for_speed import annotate_copy


def x86(is_dynamic: bool = False) -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic))


class ConvChain(nn.Module):
    """conv → relu → depthwise conv → relu → conv → relu (three int8 candidates in a chain)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.dw(y))
        return torch.relu(self.conv2(y))


class OneConv(nn.Module):
    """A single conv → relu between the float input and the float output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class Residual(nn.Module):
    """conv → (conv → relu → conv) + skip: a tensor read quantized by two units."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.project = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.project(torch.relu(self.expand(s))) + s


class PadConv(nn.Module):
    """TF-style asymmetric pad → stride-2 conv → relu, then a float-only op (sigmoid) after a
    flatten: a pass-through op that follows its int8 reader, one that stays float."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(nn.functional.pad(x, [0, 1, 0, 1])))
        return torch.sigmoid(torch.flatten(y, 1))


def annotated(model: nn.Module, *inputs: torch.Tensor, is_dynamic: bool = False) -> GraphModule:
    return annotate_copy(model.eval(), inputs, x86(is_dynamic))


def table(units: dict[str, tuple[float, float]], boundary: dict[str, tuple[float, float]],
          float_ms: float = 0.0) -> CostTable:
    """units: name → (fp32, int8) ms; boundary: tensor → (quantize, dequantize) ms."""
    return CostTable(
        units={n: UnitCost(fp32_ms=f, int8_ms=i, kernel="synthetic", description=f"op {n}") for n, (f, i) in units.items()},
        quantize_ms={t: q for t, (q, _) in boundary.items()},
        dequantize_ms={t: d for t, (_, d) in boundary.items()},
        float_ms=float_ms,
    )
