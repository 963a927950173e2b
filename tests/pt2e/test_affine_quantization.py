"""fxquant.pt2e._affine_quantization: torchao-signature quantize/dequantize adapters, and the
affine observers and AffineFakeQuantize end to end through prepare_pt2e / prepare_qat_pt2e
-> calibrate -> convert_pt2e on an exported model annotated by hand."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from helpers import assert_sqnr
from pt2e_helpers import A, FnQuantizer, export
from torch import nn
from torch.fx import GraphModule

from fxquant.numerics import affine as numerics_affine
from fxquant.numerics.blockwise import choose_qparams_affine
from fxquant.pt2e._affine_quantization import (
    AffineQuantizedMinMaxObserver,
    AffineQuantizedMovingAverageMinMaxObserver,
    AffineQuantizedPlaceholderObserver,
    MappingType,
    ZeroPointDomain,
    dequantize_affine,
    quantize_affine,
)
from fxquant.pt2e.fake_quantize import AffineFakeQuantize
from fxquant.pt2e.observer import PerAxis, PerGroup, PerToken
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map

# ---- adapters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain,zero_point",
    [(ZeroPointDomain.INT, torch.tensor([[3.0], [-2.0]])), (ZeroPointDomain.NONE, None),
     (None, None)],
    ids=["int", "none", "no-domain"],
)
def test_quantize_dequantize_adapt_to_the_numerics(domain, zero_point):
    x = torch.randn(2, 8)
    scale = torch.tensor([[0.02], [0.05]])
    q = quantize_affine(x, (1, 8), scale, torch.tensor([[3.0], [-2.0]]), torch.int8, -128, 127,
                        zero_point_domain=domain)
    assert torch.equal(q, numerics_affine.quantize_affine(x, (1, 8), scale, zero_point,
                                                          torch.int8))
    out = dequantize_affine(q, (1, 8), scale, torch.tensor([[3.0], [-2.0]]), torch.int8,
                            zero_point_domain=domain, output_dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, numerics_affine.dequantize_affine(
        q, (1, 8), scale, zero_point, torch.int8, output_dtype=torch.bfloat16))


@pytest.mark.parametrize("fn", [quantize_affine, dequantize_affine], ids=lambda f: f.__name__)
def test_float_zero_point_domain_is_refused_by_name(fn):
    x = torch.zeros(2, 4, dtype=torch.uint8)
    with pytest.raises(NotImplementedError, match=f"{fn.__name__}: a float zero point"):
        fn(x, (1, 4), torch.ones(2, 1), torch.zeros(2, 1), torch.uint8,
           zero_point_domain=ZeroPointDomain.FLOAT)


# ---- end to end -------------------------------------------------------------------------------


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _spec(ctor, is_dynamic: bool = False, **kwargs) -> QuantizationSpec:
    # dtype is required by the spec; the affine observer's target_dtype is what counts
    return QuantizationSpec(dtype=torch.int8, is_dynamic=is_dynamic,
                            observer_or_fake_quant_ctr=ctor.with_args(**kwargs))


def _annotate_linears(act: QuantizationSpec, weight: QuantizationSpec):
    def annotate(gm: GraphModule) -> None:
        for n in gm.graph.nodes:
            if n.target == A.linear.default:
                annotate_input_qspec_map(n, n.args[0], act)
                annotate_input_qspec_map(n, n.args[1], weight)
    return FnQuantizer(annotate)


def _op_counts(gm: GraphModule) -> Counter:
    return Counter(getattr(n.target, "__name__", str(n.target)).split(".")[0]
                   for n in gm.graph.nodes if n.op == "call_function")


def _model_and_data(seed: int = 0) -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(seed)
    return TwoLinear().eval(), [torch.randn(8, 64) for _ in range(4)]


def test_static_per_token_activations_and_per_group_weights():
    model, data = _model_and_data()
    act = _spec(AffineQuantizedMinMaxObserver, mapping_type=MappingType.ASYMMETRIC,
                target_dtype=torch.int8, granularity=PerToken())
    weight = _spec(AffineQuantizedMinMaxObserver, mapping_type=MappingType.SYMMETRIC,
                   target_dtype=torch.int8, granularity=PerGroup(16))
    prepared = prepare_pt2e(export(model, data[0]), _annotate_linears(act, weight))
    for x in data:
        prepared(x)
    converted = convert_pt2e(prepared)
    converted.graph.lint()
    counts = _op_counts(converted)
    assert counts["quantize_per_token"] == counts["dequantize_per_token"] == 2
    assert counts["quantize_per_channel_group"] == counts["dequantize_per_channel_group"] == 2
    assert not any(n.op == "call_module" and "activation_post_process" in str(n.target)
                   for n in converted.graph.nodes)
    # calibrated on these very tokens, so the per-token ranges fit
    assert_sqnr(model(data[-1]).detach(), converted(data[-1]).detach(), min_db=38.0)


def test_dynamic_per_token_activations_and_moving_average_per_channel_weights():
    model, data = _model_and_data(seed=1)
    act = _spec(AffineQuantizedPlaceholderObserver, is_dynamic=True,
                mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.int8,
                granularity=PerToken())
    weight = _spec(AffineQuantizedMovingAverageMinMaxObserver, mapping_type=MappingType.SYMMETRIC,
                   target_dtype=torch.int8, granularity=PerAxis(0), averaging_constant=1.0)
    prepared = prepare_pt2e(export(model, data[0]), _annotate_linears(act, weight))
    prepared(data[0])
    converted = convert_pt2e(prepared)
    converted.graph.lint()
    counts = _op_counts(converted)
    assert counts["choose_qparams_affine"] == 2  # activations: chosen at run time
    # weights: frozen per channel, stored quantized (convert folds their quantize)
    assert counts["dequantize_per_channel"] == 2 and counts["quantize_per_channel"] == 0
    unseen = torch.randn(8, 64) * 4  # a range calibration never saw
    assert_sqnr(model(unseen).detach(), converted(unseen).detach(), min_db=38.0)


def test_qat_with_affine_fake_quantize_converts_to_what_it_trained():
    model, data = _model_and_data(seed=2)
    act = _spec(AffineFakeQuantize, observer=AffineQuantizedPlaceholderObserver, is_dynamic=True,
                mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.int8,
                granularity=PerToken())
    weight = _spec(AffineFakeQuantize, observer=AffineQuantizedMinMaxObserver,
                   mapping_type=MappingType.SYMMETRIC, target_dtype=torch.int8,
                   granularity=PerGroup(16))
    prepared = prepare_qat_pt2e(export(model.train(), data[0]), _annotate_linears(act, weight))
    fqs = [m for m in prepared.modules() if isinstance(m, AffineFakeQuantize)]
    assert len(fqs) == 4
    opt = torch.optim.SGD(prepared.parameters(), lr=1e-2)
    for x in data:  # a few steps: gradients flow through the fake-quantizers
        opt.zero_grad()
        loss = prepared(x).pow(2).mean()
        loss.backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prepared.parameters())
    x = torch.randn(8, 64)
    trained = prepared(x).detach()
    converted = convert_pt2e(prepared)
    assert _op_counts(converted)["choose_qparams_affine"] == 2
    # the converted graph computes exactly what the fake-quantized one did
    assert torch.equal(converted(x).detach(), trained)


def test_converted_dynamic_model_equals_the_numerics_by_hand():
    model, data = _model_and_data(seed=3)
    act = _spec(AffineQuantizedPlaceholderObserver, is_dynamic=True,
                mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.int8,
                granularity=PerToken())
    weight = _spec(AffineQuantizedMinMaxObserver, mapping_type=MappingType.SYMMETRIC,
                   target_dtype=torch.int8, granularity=PerAxis(0))
    prepared = prepare_pt2e(export(model, data[0]), _annotate_linears(act, weight))
    prepared(data[0])
    converted = convert_pt2e(prepared)

    def fq_token(t: torch.Tensor) -> torch.Tensor:  # dynamic: parameters from t itself
        block = (1, t.shape[-1])
        scale, zp = choose_qparams_affine(t, MappingType.ASYMMETRIC, block, torch.int8)
        return numerics_affine.fake_quantize_affine(t, block, scale, zp, torch.int8)

    def fq_weight(w: torch.Tensor) -> torch.Tensor:  # static per output channel
        block = (1, w.shape[1])
        scale, zp = choose_qparams_affine(w, MappingType.SYMMETRIC, block, torch.int8)
        return numerics_affine.fake_quantize_affine(w, block, scale, zp, torch.int8)

    x = data[1] * 2
    with torch.no_grad():
        h = torch.relu(nn.functional.linear(fq_token(x), fq_weight(model.fc1.weight),
                                            model.fc1.bias))
        expected = nn.functional.linear(fq_token(h), fq_weight(model.fc2.weight), model.fc2.bias)
    assert torch.equal(converted(x), expected)
