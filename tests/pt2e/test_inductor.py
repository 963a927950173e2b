"""Converted models (X86InductorQuantizer) under torch.compile (Inductor, CPU): one graph, the
eager results, and with freezing Inductor's x86 int8 passes pick up fxquant's q/dq patterns.

Inductor compiles are slow: three small compiles in this file."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._inductor.config as inductor_config
from helpers import assert_sqnr
from pt2e_helpers import export, op_counts
from torch import nn
from torch._dynamo.utils import counters
from torch.fx import GraphModule

from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)


class ResidualNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = torch.relu(self.conv(y) + y)
        return self.fc(nn.functional.max_pool2d(y, 2).mean((2, 3)))


@pytest.fixture(scope="module")
def model_and_input() -> tuple[GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    gm = prepare_pt2e(export(ResidualNet(), x), quantizer)
    for _ in range(3):
        gm(torch.randn_like(x))
    return convert_pt2e(gm), x


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def compiled_output(model: nn.Module, x: torch.Tensor, *, freezing: bool) -> torch.Tensor:
    with inductor_config.patch(freezing=freezing), torch.no_grad():
        return torch.compile(model, fullgraph=True)(x)


def assert_within_one_step(ref: torch.Tensor, out: torch.Tensor, step: float) -> None:
    assert (ref - out).abs().max() <= step
    assert_sqnr(ref, out, min_db=40)


def output_step(gm: GraphModule) -> float:
    """One quantization step of the values that reach the output: the model ends in a float
    linear, so a step of its int8 input moves the output by up to scale * sum |w| per row."""
    linear = next(n for n in gm.graph.nodes if n.op == "output").args[0][0]
    x_scale = float(linear.args[0].args[1])
    weight = linear.args[1]
    w_int = getattr(gm, weight.args[0].target).float()
    w_scale = getattr(gm, weight.args[1].target)
    return x_scale * float((w_int.abs().sum(1) * w_scale).max())


def test_compiled_with_freezing_runs_int8_kernels_with_the_eager_results(model_and_input):
    q, x = model_and_input
    with torch.no_grad():
        ref = q(x)
    out = compiled_output(q, x, freezing=True)
    # Inductor matched fxquant's q/dq patterns and packed the weights for its int8 kernels
    inductor = counters["inductor"]
    assert inductor["qconv_weight_prepack_matcher_count"] == 2
    assert inductor["qlinear_weight_prepack_matcher_count"] == 1
    assert inductor["qconv_unary_matcher_count"] == 1  # stem conv + relu
    assert inductor["qconv2d_binary_matcher_count"] == 1  # conv + residual add + relu
    assert_within_one_step(ref, out, output_step(q))


def test_compiled_without_freezing_gives_the_eager_results(model_and_input):
    q, x = model_and_input
    with torch.no_grad():
        ref = q(x)
    out = compiled_output(q, x, freezing=False)
    assert_within_one_step(ref, out, output_step(q))


def test_reference_representation_compiles_to_the_same_results(model_and_input):
    from fxquant.engine.reference_representation import rewrite_to_reference_representation

    q, x = model_and_input
    reference = rewrite_to_reference_representation(copy.deepcopy(q))
    assert op_counts(reference) == {}
    with torch.no_grad():
        ref = q(x)
    out = compiled_output(reference, x, freezing=False)
    assert_within_one_step(ref, out, output_step(q))
