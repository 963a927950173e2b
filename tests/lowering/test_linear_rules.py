"""Float-output int8 linears on oneDNN (lowering/rules/linear.py): the plain GEMM, GEMM + GELU
and GEMM + residual add match the q/dq reference within float rounding of the GEMM's
epilogue; the kernels themselves against float arithmetic on the same integers."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from helpers import assert_sqnr
from pt2e_helpers import ACT, WEIGHT, A, FnQuantizer
from torch import nn
from torch.fx import GraphModule

from fxquant.lowering import kernels, lower_to_int8, lowering_report
from fxquant.lowering.rules.linear import (
    HAS_ONEDNN_LINEAR,
    OneDNNLinearWeight,
    onednn_linear,
    onednn_linear_add,
)
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map

pytestmark = pytest.mark.skipif(not HAS_ONEDNN_LINEAR, reason="torch built without oneDNN")


def annotate_linear_inputs(gm: GraphModule) -> None:
    """Input and weight of every linear (outputs stay float: the transformer recipe)."""
    for n in gm.graph.nodes:
        if n.target == A.linear.default:
            annotate_input_qspec_map(n, n.args[0], ACT)
            annotate_input_qspec_map(n, n.args[1], WEIGHT)


class Block(nn.Module):
    """A transformer feed-forward block: LN -> linear -> GELU -> linear -> + residual, then a
    plain float-output linear."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(32), nn.Linear(32, 64), nn.Linear(64, 32)
        self.head = nn.Linear(32, 8)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        h = h + self.down(nn.functional.gelu(self.up(h), approximate=self.approximate))
        return self.head(h)


def reference_and_lowered(model: nn.Module, x: torch.Tensor) -> tuple[GraphModule, GraphModule]:
    torch.manual_seed(0)
    gm = prepare_pt2e(torch.export.export(model.eval(), (x,)).module(), FnQuantizer(annotate_linear_inputs))
    with torch.no_grad():
        for _ in range(4):
            gm(torch.randn_like(x))
    ref = convert_pt2e(gm)
    return ref, lower_to_int8(ref)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_and_residual_add_fold_into_the_int8_gemm(approximate):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32)
    ref, low = reference_and_lowered(Block(approximate), x)
    applied = dict(lowering_report(low).applied)
    assert applied["linear_gelu_float_out"] == 1
    assert applied["linear_add_float_out"] == 1
    assert applied["linear_float_out"] == 1
    targets = [n.target for n in low.graph.nodes if n.op == "call_function"]
    assert A.gelu.default not in targets and A.linear.default not in targets
    assert targets.count(onednn_linear) == 2 and targets.count(onednn_linear_add) == 1
    with torch.no_grad():
        expected, got = ref(x), low(x)
    # the same integers and int32 sums: only the float epilogue rounds differently (measured:
    # 141 dB, max difference 2e-7 on outputs of magnitude 1.7)
    assert_sqnr(expected, got, min_db=100)
    torch.testing.assert_close(got, expected, atol=1e-5 * expected.abs().max().item(), rtol=0)


def _int8_weight(out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(out_features, in_features) * 0.1
    scales = w.abs().amax(1) / 127
    return torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8), scales


@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24)], ids=["2d", "3d"])
@pytest.mark.parametrize("unary", ["none", "gelu-erf", "gelu-tanh"])
def test_onednn_linear_is_float_linear_of_the_same_integers(shape, unary):
    torch.manual_seed(0)
    w, scales = _int8_weight(16, 24)
    bias = torch.randn(16)
    weight = OneDNNLinearWeight(weight=w, scales=scales, bias=bias)
    x = torch.quantize_per_tensor(torch.randn(shape), 0.03, 120, torch.quint8)
    expected = nn.functional.linear(x.dequantize(), w.float() * scales[:, None], bias)
    if unary == "none":
        got = onednn_linear(x, weight)
    else:
        approximate = unary.split("-")[1].replace("erf", "none")
        got = onednn_linear(x, weight, "gelu", approximate)
        expected = nn.functional.gelu(expected, approximate=approximate)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_onednn_linear_add_adds_and_leaves_the_operand_alone():
    torch.manual_seed(0)
    w, scales = _int8_weight(16, 24)
    weight = OneDNNLinearWeight(weight=w, scales=scales, bias=None)
    x = torch.quantize_per_tensor(torch.randn(3, 24), 0.03, 120, torch.quint8)
    other = torch.randn(3, 16)
    kept = other.clone()
    got = onednn_linear_add(x, weight, other)
    expected = nn.functional.linear(x.dequantize(), w.float() * scales[:, None]) + kept
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(other, kept)


def test_a_non_contiguous_quantized_input_is_read_correctly():
    torch.manual_seed(0)
    w, scales = _int8_weight(8, 12)
    weight = OneDNNLinearWeight(weight=w, scales=scales, bias=None)
    x = torch.quantize_per_tensor(torch.randn(12, 5), 0.02, 128, torch.quint8).t()
    expected = nn.functional.linear(x.dequantize(), w.float() * scales[:, None])
    torch.testing.assert_close(onednn_linear(x, weight), expected, atol=1e-5, rtol=1e-5)


def test_packed_weight_survives_deepcopy_and_pickle():
    torch.manual_seed(0)
    w, scales = _int8_weight(8, 12)
    weight = OneDNNLinearWeight(weight=w, scales=scales, bias=torch.randn(8))
    x = torch.quantize_per_tensor(torch.randn(4, 12), 0.02, 128, torch.quint8)
    expected = onednn_linear(x, weight)
    for copied in (copy.deepcopy(weight), pickle.loads(pickle.dumps(weight))):
        assert copied.packed is not weight.packed
        assert torch.equal(onednn_linear(x, copied), expected)


def test_lowered_model_can_be_deep_copied():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32)
    _, low = reference_and_lowered(Block(), x)
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(low)(x), low(x))


def test_dynamic_linear_before_gelu_takes_the_onednn_gemm_and_others_stay_dynamic():
    from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    torch.manual_seed(0)
    x = torch.randn(2, 16, 32)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_dynamic=True))
    prepared = prepare_pt2e(torch.export.export(Block().eval(), (x,)).module(), quantizer)
    with torch.no_grad():
        prepared(x)  # the weight observers
    ref = convert_pt2e(prepared)
    low = lower_to_int8(ref)
    applied = dict(lowering_report(low).applied)
    assert applied == {"linear_gelu_float_out": 1, "linear_dynamic": 2}
    targets = [n.target for n in low.graph.nodes if n.op == "call_function"]
    # the dynamic kernel without the packed weight's __torch_function__ probe
    assert targets.count(kernels.linear_dynamic) == 2
    assert targets.count(A.quantize_per_tensor_dynamic.default) == 1
    assert A.gelu.default not in targets and torch.ops.quantized_decomposed.choose_qparams.tensor not in targets
    with torch.no_grad():
        expected, got = ref(x), low(x)
    # parameters chosen per call by the kernels (min/max, as choose_qparams): a value may
    # round one step apart
    assert_sqnr(expected, got, min_db=35)


class ReLUMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 24), nn.Linear(24, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_static_int8_linears_call_the_kernel_wrappers_with_the_bare_ops_numbers():
    from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    torch.manual_seed(0)
    x = torch.randn(4, 32)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(torch.export.export(ReLUMLP().eval(), (x,)).module(), quantizer)
    with torch.no_grad():
        for _ in range(4):
            prepared(torch.randn_like(x))
    low = lower_to_int8(convert_pt2e(prepared))
    targets = [n.target for n in low.graph.nodes if n.op == "call_function"]
    assert targets.count(kernels.linear_relu) == 1
    bare = copy.deepcopy(low)
    for node in bare.graph.nodes:
        if node.target is kernels.linear_relu:
            node.target = torch.ops.quantized.linear_relu.default
    bare.recompile()
    with torch.no_grad():
        assert torch.equal(low(x), bare(x))
