"""Attention with quantized matmuls (the x86 quantizer's opt-in matmul annotation) on int8
GEMMs (lowering/rules/int8_matmul.py): exact integer products, the attention output within
one quantization step of the convert_pt2e reference, and the rule only where the graph
quantized both matmuls."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_sqnr
from pt2e_helpers import ACT, QD, WEIGHT, A, FnQuantizer
from torch import nn
from torch.fx import GraphModule

from fxquant.lowering import INT8_RULES, lower_to_int8, lowering_report
from fxquant.lowering.graph import QTensorMeta
from fxquant.lowering.rules import int8_matmul
from fxquant.lowering.rules.int8_matmul import (
    INT8_MATMUL_RULES,
    int8_attention,
    int8_batched_matmul,
    int8_integers,
)
from fxquant.metrics import mean_cosine
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

RULES = (*INT8_RULES, *INT8_MATMUL_RULES)
SDPA = A.scaled_dot_product_attention.default


# ----------------------------------------------------------------------------- kernels
def quantized(shape: tuple[int, ...], scale: float, zero_point: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.quantize_per_tensor(torch.randn(shape, generator=g) * 2, scale, zero_point, dtype)


@pytest.mark.parametrize("dtype,zero_point", [(torch.quint8, 131), (torch.quint8, 0), (torch.qint8, -5)],
                         ids=["quint8", "quint8-zp0", "qint8"])
def test_int8_integers_are_the_stored_integers_minus_the_offset(dtype, zero_point):
    x = quantized((2, 6, 5), 0.05, zero_point, dtype, seed=1).transpose(1, 2)  # a strided view
    ints, offset = int8_integers(x)
    assert ints.dtype == torch.int8 and ints.shape == x.shape and ints.stride() == x.stride()
    assert offset == (128 if dtype == torch.quint8 else 0)
    assert torch.equal(ints.int() + offset, x.int_repr().int())


def test_int8_integers_refuses_a_float_tensor():
    with pytest.raises(TypeError, match="torch.quint8 or torch.qint8"):
        int8_integers(torch.randn(3))


@pytest.mark.parametrize("b_shape", [(3, 2, 5, 7), (2, 5, 7), (5, 7)], ids=["same-batch", "broadcast-3d", "broadcast-2d"])
def test_int8_batched_matmul_is_the_exact_integer_product(b_shape):
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (3, 2, 17, 5), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (*b_shape[:-2], 7, 5), generator=g, dtype=torch.int8).transpose(-1, -2)
    got = int8_batched_matmul(a, b)
    assert got.dtype == torch.int32 and got.shape == (3, 2, 17, 7)
    assert torch.equal(got, torch.matmul(a.long(), b.long()).int())


def reference_attention(q, k_t, v, mask, scale, probs: QTensorMeta, out: QTensorMeta) -> torch.Tensor:
    """What the converted graph computes: float matmuls of the dequantized values."""
    s = torch.matmul(q.dequantize(), k_t.dequantize()) * scale
    if mask is not None:
        s = s + mask
    p = torch.quantize_per_tensor(s.softmax(-1), probs.scale, probs.zero_point, probs.dtype)
    return torch.quantize_per_tensor(torch.matmul(p.dequantize(), v.dequantize()), out.scale, out.zero_point, out.dtype)


@pytest.mark.parametrize("dtype,zps", [(torch.quint8, (124, 122, 144, 0, 164)), (torch.quint8, (128, 128, 128, 0, 128)),
                                       (torch.qint8, (-3, 4, 16, -128, 36))], ids=["quint8", "quint8-zp128", "qint8"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
def test_int8_attention_is_within_one_step_of_the_reference(dtype, zps, with_mask):
    b, h, seq, d = 2, 3, 24, 8
    q = quantized((b, h, seq, d), 0.06, zps[0], dtype, seed=1)
    k_t = quantized((b, h, seq, d), 0.07, zps[1], dtype, seed=2).transpose(-1, -2)
    v = quantized((b, h, seq, d), 0.03, zps[2], dtype, seed=3)
    mask = torch.zeros(b, 1, 1, seq)
    mask[1, ..., 17:] = -10000.0
    probs = QTensorMeta(scale=1 / 255, zero_point=zps[3], dtype=dtype)
    out = QTensorMeta(scale=0.02, zero_point=zps[4], dtype=dtype)
    args = (q, k_t, v, mask if with_mask else None, 1 / math.sqrt(d))
    got = int8_attention(*args, probs.scale, probs.zero_point, dtype, out.scale, out.zero_point, dtype)
    expected = reference_attention(*args, probs, out)
    assert got.dtype == dtype and (got.q_scale(), got.q_zero_point()) == (out.scale, out.zero_point)
    diff = (got.int_repr().int() - expected.int_repr().int()).abs()
    assert int(diff.max()) <= 1
    assert float((diff > 0).float().mean()) < 0.01  # float rounding: rare single steps


@pytest.mark.parametrize("mask_shape", [(2, 1, 24, 24), (24, 24), (2, 3, 24, 24)], ids=["per-query", "2d", "per-head"])
def test_int8_attention_takes_masks_of_any_broadcastable_shape(mask_shape):
    q = quantized((2, 3, 24, 8), 0.06, 120, torch.quint8, seed=1)
    k_t = quantized((2, 3, 24, 8), 0.07, 130, torch.quint8, seed=2).transpose(-1, -2)
    v = quantized((2, 3, 24, 8), 0.03, 140, torch.quint8, seed=3)
    mask = torch.zeros(mask_shape).masked_fill(torch.rand(mask_shape, generator=torch.Generator().manual_seed(4)) < 0.3,
                                               -10000.0)
    probs, out = QTensorMeta(scale=1 / 255, zero_point=0, dtype=torch.quint8), QTensorMeta(scale=0.02, zero_point=128, dtype=torch.quint8)
    got = int8_attention(q, k_t, v, mask, 0.35, probs.scale, 0, torch.quint8, out.scale, out.zero_point, torch.quint8)
    expected = reference_attention(q, k_t, v, mask, 0.35, probs, out)
    assert int((got.int_repr().int() - expected.int_repr().int()).abs().max()) <= 1


@pytest.mark.parametrize("chunk_heads", [1, 4], ids=["one-head", "with-remainder"])
def test_chunks_of_heads_give_the_same_result(monkeypatch, chunk_heads):
    b, h, seq, d = 2, 3, 16, 8  # 6 heads
    q = quantized((b, h, seq, d), 0.06, 124, torch.quint8, seed=1)
    k_t = quantized((b, h, seq, d), 0.07, 122, torch.quint8, seed=2).transpose(-1, -2)
    v = quantized((b, h, seq, d), 0.03, 144, torch.quint8, seed=3)
    mask = torch.zeros(b, 1, 1, seq)
    mask[1, ..., 9:] = -10000.0
    args = (q, k_t, v, mask, 0.35, 1 / 255, 0, torch.quint8, 0.02, 164, torch.quint8)
    whole = int8_attention(*args)
    monkeypatch.setattr(int8_matmul, "_CHUNK_BYTES", chunk_heads * 4 * seq * seq)
    assert torch.equal(int8_attention(*args).int_repr(), whole.int_repr())


# ----------------------------------------------------------------------------- the rule
class Attention(nn.Module):
    """BERT-style self-attention: q/k/v projections, attention, output projection
    (``project=False``: the attention output is the model's output)."""

    def __init__(self, project: bool = True) -> None:
        super().__init__()
        self.heads, self.dim, self.project = 4, 8, project
        self.q, self.k, self.v, self.out = (nn.Linear(32, 32) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = (f(x).unflatten(-1, (self.heads, self.dim)).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1 / math.sqrt(self.dim)) + mask
        y = torch.matmul(scores.softmax(-1), v)
        return self.out(y.transpose(1, 2).flatten(2)) if self.project else y


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mask = torch.zeros(2, 1, 1, 16)
    mask[1, ..., 11:] = -10000.0
    return torch.randn(2, 16, 32), mask


def annotate(matmuls: bool, quantize_output: bool):
    def fn(gm: GraphModule) -> None:
        for n in gm.graph.nodes:
            if n.target == A.linear.default:
                annotate_input_qspec_map(n, n.args[0], ACT)
                annotate_input_qspec_map(n, n.args[1], WEIGHT)
            elif n.target == A.matmul.default and matmuls:  # as the x86 quantizer's opt-in
                for a in n.args:
                    annotate_input_qspec_map(n, a, ACT)
        if quantize_output:  # the attention output (the last matmul) read in int8
            annotate_output_qspec([n for n in gm.graph.nodes if n.target == A.matmul.default][-1], ACT)
    return fn


def converted(matmuls: bool, project: bool = True) -> GraphModule:
    x, mask = inputs()
    quantizer = FnQuantizer(annotate(matmuls, quantize_output=not project))
    gm = prepare_pt2e(torch.export.export(Attention(project).eval(), (x, mask)).module(), quantizer)
    with torch.no_grad():
        for _ in range(4):
            gm(torch.randn_like(x), mask)
    return convert_pt2e(gm)


def targets(gm: GraphModule) -> list[object]:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_quantized_attention_becomes_one_int8_call_within_one_step():
    ref = converted(matmuls=True, project=False)
    low = lower_to_int8(ref, rules=RULES)
    assert dict(lowering_report(low).applied)["int8_attention"] == 1
    assert targets(low).count(int8_attention) == 1
    assert not {A.matmul.default, A.softmax.int, SDPA} & set(targets(low))
    (dq,) = next(n for n in ref.graph.nodes if n.op == "output").args[0]
    assert dq.target == QD.dequantize_per_tensor.default
    step = dq.args[1]  # the scale the attention output is quantized with
    with torch.no_grad():
        expected, got = ref(*inputs()), low(*inputs())
    steps = (got - expected).abs() / step
    assert float(steps.max()) <= 1.0 + 1e-4
    assert float((steps > 0.5).float().mean()) < 0.01  # float rounding: rare single steps


def test_projected_attention_stays_close_to_the_reference():
    ref = converted(matmuls=True)
    low = lower_to_int8(ref, rules=RULES)
    assert targets(low).count(int8_attention) == 1
    with torch.no_grad():
        expected, got = ref(*inputs()), low(*inputs())
    assert_sqnr(expected, got, min_db=35)


def test_the_rule_fires_only_where_both_matmuls_are_quantized():
    default = converted(matmuls=False, project=False)  # the default recipe: float attention
    low = lower_to_int8(default, rules=RULES)
    assert "int8_attention" not in dict(lowering_report(low).applied)
    assert targets(low).count(SDPA) == 1  # the fused float attention took it


def test_the_default_table_leaves_quantized_matmuls_in_reference_form():
    low = lower_to_int8(converted(matmuls=True))  # INT8_RULES only: the rule is opt-in
    assert int8_attention not in targets(low)
    assert targets(low).count(A.matmul.default) == 2


# ----------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_minilm_with_int8_attention_keeps_the_reference_embeddings():
    from fxquant.pt2e.quantizer import QuantizationConfig
    from fxquant.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer
    from fxquant.zoo import minilm_l6, minilm_tokenizer, real_sentences

    model, tokenizer = minilm_l6().eval(), minilm_tokenizer()
    calibration = tokenizer.encode(real_sentences(8, split="calibration", seed=0), max_length=64)
    ids, mask = tokenizer.encode(real_sentences(8, split="holdout"), max_length=64)
    # the x86 layout with min/max observers (the default's histogram and output-aware weight
    # observers take ~30 s to convert; the lowering under test is the same)
    config = QuantizationConfig(input_activation=ACT, output_activation=ACT, weight=WEIGHT, bias=None)
    quantizer = X86InductorQuantizer().set_global(config).set_function_type_qconfig(torch.matmul, config)
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=256)
    exported = torch.export.export(model, calibration, dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    gm = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        gm(*calibration)
        ref = convert_pt2e(gm)
        low = lower_to_int8(ref, rules=RULES)
        fp32, expected, got = model(ids, mask), ref(ids, mask), low(ids, mask)
    print(f"MiniLM-L6 int8 attention: cosine {mean_cosine(expected, got):.5f} to the reference, "
          f"{mean_cosine(fp32, got):.4f} to fp32 (reference {mean_cosine(fp32, expected):.4f})")
    assert dict(lowering_report(low).applied)["int8_attention"] == 6  # every layer
    assert A.matmul.default not in targets(low)
    # the same model, requantization rounding only (0.9991 here; the other rules alone: 0.9993)
    assert mean_cosine(expected, got) > 0.998
    assert mean_cosine(fp32, got) >= 0.98
