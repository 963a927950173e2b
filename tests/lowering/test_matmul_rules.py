"""The float attention block between int8 projections becomes one fused attention call
(lowering/rules/matmul.py), within float rounding of the reference; variants it must not
touch stay as they are."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_sqnr
from pt2e_helpers import ACT, WEIGHT, A, FnQuantizer
from torch import nn
from torch.fx import GraphModule

from fxquant.lowering import lower_to_int8, lowering_report
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map

SDPA = A.scaled_dot_product_attention.default


def annotate_linear_inputs(gm: GraphModule) -> None:
    for n in gm.graph.nodes:
        if n.target == A.linear.default:
            annotate_input_qspec_map(n, n.args[0], ACT)
            annotate_input_qspec_map(n, n.args[1], WEIGHT)


class Attention(nn.Module):
    """BERT-style self-attention: int8 q/k/v projections, float attention, int8 output
    projection (``project=False``: the attention output is the model's output)."""

    def __init__(self, scaling: str = "mul", mask: bool = True, project: bool = True,
                 return_probs: bool = False, mask_first: bool = False) -> None:
        super().__init__()
        self.heads, self.dim = 4, 8
        self.q, self.k, self.v, self.out = (nn.Linear(32, 32) for _ in range(4))
        self.scaling, self.mask, self.project, self.return_probs = scaling, mask, project, return_probs
        self.mask_first = mask_first  # mask + scores, the mask computed in the graph (one reader)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        q, k, v = (f(x).unflatten(-1, (self.heads, self.dim)).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = torch.matmul(q, k.transpose(-1, -2))
        if self.scaling == "mul":
            scores = scores * (1 / math.sqrt(self.dim))
        elif self.scaling == "div":
            scores = scores / math.sqrt(self.dim)
        if self.mask_first:
            scores = (mask > -1).float().sub(1.0).mul(10000.0) + scores
        elif self.mask:
            scores = scores + mask
        probs = scores.softmax(-1)
        y = torch.matmul(probs, v)
        if self.project:
            y = self.out(y.transpose(1, 2).flatten(2))
        return (y, probs) if self.return_probs else y


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mask = torch.zeros(2, 1, 1, 16)
    mask[1, ..., 11:] = -10000.0  # padding of the second sequence
    return torch.randn(2, 16, 32), mask


def reference_and_lowered(model: nn.Module) -> tuple[GraphModule, GraphModule]:
    x, mask = inputs()
    gm = prepare_pt2e(torch.export.export(model.eval(), (x, mask)).module(), FnQuantizer(annotate_linear_inputs))
    with torch.no_grad():
        for _ in range(4):
            gm(torch.randn_like(x), mask)
    ref = convert_pt2e(gm)
    return ref, lower_to_int8(ref)


def targets(gm: GraphModule) -> list[object]:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("scaling", ["mul", "div", "none"])
@pytest.mark.parametrize("mask", [True, False], ids=["mask", "no-mask"])
def test_attention_becomes_one_fused_call_within_float_rounding(scaling, mask):
    ref, low = reference_and_lowered(Attention(scaling, mask, project=False))
    assert dict(lowering_report(low).applied)["attention"] == 1
    assert targets(low).count(SDPA) == 1
    assert not {A.matmul.default, A.softmax.int} & set(targets(low))
    sdpa = next(n for n in low.graph.nodes if n.target == SDPA)
    expected_scale = {"mul": 1 / math.sqrt(8), "div": 1 / math.sqrt(8), "none": 1.0}[scaling]
    assert sdpa.kwargs["scale"] == pytest.approx(expected_scale, rel=1e-12)
    assert (sdpa.kwargs["attn_mask"] is not None) == mask
    with torch.no_grad():
        expected, got = ref(*inputs()), low(*inputs())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_mask_computed_in_the_graph_and_added_first_is_found():
    ref, low = reference_and_lowered(Attention(project=False, mask_first=True))
    assert targets(low).count(SDPA) == 1
    sdpa = next(n for n in low.graph.nodes if n.target == SDPA)
    assert sdpa.kwargs["attn_mask"].target == A.mul.Tensor
    with torch.no_grad():
        expected, got = ref(*inputs()), low(*inputs())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_projected_attention_output_stays_within_one_step():
    ref, low = reference_and_lowered(Attention())
    assert targets(low).count(SDPA) == 1
    with torch.no_grad():
        expected, got = ref(*inputs()), low(*inputs())
    # the attention output is quantized before the output projection: float rounding may
    # move a value across a rounding boundary (one step), never further
    assert_sqnr(expected, got, min_db=40)


def test_attention_whose_probabilities_are_also_returned_is_left_alone():
    ref, low = reference_and_lowered(Attention(project=False, return_probs=True))
    assert SDPA not in targets(low)
    assert targets(low).count(A.matmul.default) == 2
    with torch.no_grad():
        for e, g in zip(ref(*inputs()), low(*inputs()), strict=True):
            torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-6)
