"""Small quantizers and models for engine tests (annotations written by hand)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxquant import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver
from fxquant.pt2e.quantizer import QuantizationSpec, Quantizer
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

A = torch.ops.aten
QD = torch.ops.quantized_decomposed

ACT = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255,
                       qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=MinMaxObserver)
ACT_HIST = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255,
                            qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=HistogramObserver)
WEIGHT = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127,
                          qscheme=torch.per_channel_symmetric, ch_axis=0,
                          observer_or_fake_quant_ctr=PerChannelMinMaxObserver)


class FnQuantizer(Quantizer):
    """A quantizer whose annotate is a plain function of the graph module."""

    def __init__(self, fn: Callable[[GraphModule], None]) -> None:
        self.fn = fn

    def annotate(self, model: GraphModule) -> GraphModule:
        self.fn(model)
        return model

    def validate(self, model: GraphModule) -> None:
        return None


def nodes(gm: GraphModule, target) -> list[Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == target]


def annotate_conv_linear(gm: GraphModule, act: QuantizationSpec = ACT) -> None:
    """Input, per-channel weight and output of every conv/linear (output after a relu)."""
    for n in gm.graph.nodes:
        if n.target not in (A.conv2d.default, A.linear.default):
            continue
        annotate_input_qspec_map(n, n.args[0], act)
        annotate_input_qspec_map(n, n.args[1], WEIGHT)
        users = list(n.users)
        out = users[0] if len(users) == 1 and users[0].target == A.relu.default else n
        annotate_output_qspec(out, act)


def op_counts(gm: GraphModule) -> Counter:
    """How many of each q/dq op (by short name) and observer call the graph has."""
    counts: Counter = Counter()
    for n in gm.graph.nodes:
        if n.op == "call_function" and str(n.target).startswith("quantized_decomposed."):
            counts[str(n.target).split(".")[1]] += 1
        elif n.op == "call_module" and str(n.target).startswith("activation_post_process_"):
            counts["observer"] += 1
    return counts


class ConvBnReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean((2, 3)))


def export(model: nn.Module, *args: torch.Tensor) -> GraphModule:
    return torch.export.export(model.eval(), args).module()
