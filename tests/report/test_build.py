"""build_report's numbers: local SQNR by hand from fxquant.numerics, propagated SQNR as the
numeric debugger's comparison, model SQNR as fxquant.metrics.sqnr; float ops and reasons."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fxquant.metrics import sqnr
from fxquant.numerics.affine import fake_quantize_per_channel, fake_quantize_per_tensor
from fxquant.pt2e._numeric_debugger import (
    compare_results,
    extract_results_from_loggers,
    prepare_for_propagation_comparison,
)
from fxquant.pt2e.quantizer.float_fallback import FallbackReason, KeepFloatQuantizer
from fxquant.report import build_report, capture_with_debug_handles
from fxquant.report.build import _float_weights, float_reference
from fxquant.report.graph_eval import GraphIndex, flat_inputs, handle_of, run_with_float_ops

QD = torch.ops.quantized_decomposed


def test_local_sqnr_of_a_linear_is_the_hand_computation(quantize, x86):
    torch.manual_seed(1)
    model = nn.Linear(16, 8).eval()
    x = torch.randn(32, 16) * torch.linspace(0.1, 3, 16)
    float_gm = capture_with_debug_handles(model, (x,))
    q = quantize(float_gm, x86(), [x])
    report = build_report(float_gm, q, [x], measure_top=0)
    (layer,) = report.layers
    # the q/dq parameters the quantized graph uses, applied by hand with fxquant.numerics
    act_q = next(n for n in q.graph.nodes if n.target == QD.quantize_per_tensor.default)
    _, scale, zero_point, qmin, qmax, _ = act_q.args
    w_dq = next(n for n in q.graph.nodes if n.target == QD.dequantize_per_channel.default)
    w_scales, w_zps = (getattr(q, a.target) for a in w_dq.args[1:3])
    axis, w_qmin, w_qmax = w_dq.args[3:6]
    x_fq = fake_quantize_per_tensor(x, scale, zero_point, qmin, qmax)
    w_fq = fake_quantize_per_channel(model.weight.detach(), w_scales, w_zps, axis, w_qmin, w_qmax)
    expected = sqnr(model(x).detach(), torch.nn.functional.linear(x_fq, w_fq, model.bias.detach()))
    assert layer.local_sqnr_db == pytest.approx(expected, abs=1e-3)
    # a single layer: everything up to here is this layer
    assert layer.propagated_sqnr_db == pytest.approx(expected, abs=1e-3)
    assert layer.stats["weight_only_sqnr_db"] > layer.local_sqnr_db
    assert layer.stats["input_only_sqnr_db"] > layer.local_sqnr_db


def test_propagated_sqnr_is_the_numeric_debuggers_comparison(small):
    _model, float_gm, q, batches = small
    report = build_report(float_gm, q, batches[:1], measure_top=0)
    ref_logged = prepare_for_propagation_comparison(float_reference(float_gm))
    q_logged = prepare_for_propagation_comparison(q)
    with torch.no_grad():
        ref_logged(batches[0])
        q_logged(batches[0])
    summary = compare_results(extract_results_from_loggers(ref_logged), extract_results_from_loggers(q_logged))
    index = GraphIndex.of(q)
    checked = 0
    for layer in report.layers:
        head = next(n for n in q.graph.nodes if n.name == layer.name)
        handle = handle_of(index.tail[head])
        result = summary[handle].results[0]
        assert layer.propagated_sqnr_db == pytest.approx(sqnr(result.ref, result.actual), abs=1e-3), layer.name
        checked += 1
    assert checked == len(report.layers) >= 4


def test_model_sqnr_is_the_output_sqnr(small):
    model, float_gm, q, batches = small
    report = build_report(float_gm, q, batches, measure_top=0)
    with torch.no_grad():
        ref = torch.cat([model(b) for b in batches])
        out = torch.cat([q(b) for b in batches])
    assert report.model_sqnr_db == pytest.approx(sqnr(ref, out), abs=1e-3)
    assert report.metrics["mean_cosine"] == pytest.approx(float(torch.cosine_similarity(ref, out, -1).mean()), abs=1e-5)


def test_layers_float_ops_and_reasons(small):
    _model, float_gm, q, batches = small
    report = build_report(float_gm, q, batches, measure_top=2, fallbacks={"mean": FallbackReason.SPEED_PLAN})
    names = [layer.name for layer in report.layers]
    assert names[:2] == ["conv2d", "conv2d_1"]  # graph order; relu fused into the first conv
    assert "relu" not in names and "relu" not in [op.name for op in report.float_ops]
    assert report.layer("conv2d").module_path == "conv"
    assert report.layer("conv2d_1").stats["depthwise"] == 1.0
    reasons = {op.name: op.reason for op in report.float_ops}
    assert reasons["softmax"] is FallbackReason.NO_PATTERN
    assert reasons["mean"] is FallbackReason.SPEED_PLAN
    assert all(layer.spec and layer.cause and layer.remedy for layer in report.layers)
    assert "u8 per-tensor" in report.layer("conv2d").spec and "i8 per-channel" in report.layer("conv2d").spec
    # two candidates measured, ranked first; the rest estimated below them
    worst = report.worst(len(report.layers))
    assert [w.recovery_measured for w in worst[:2]] == [True, True]
    assert not any(w.recovery_measured for w in worst[2:])
    assert worst[0].recovery_db >= worst[1].recovery_db >= max(w.recovery_db for w in worst[2:])


def test_backend_constraint_and_user_choice_reasons(small, quantize, x86):
    _model, float_gm, _, batches = small
    quantizer = x86()
    quantizer.set_module_name_qconfig("fc", None)
    keep = KeepFloatQuantizer(quantizer, ["conv2d_1"])
    q = quantize(float_gm, keep, batches)
    report = build_report(float_gm, q, batches, fallbacks=keep.kept_float, measure_top=0)
    reasons = {op.name: op.reason for op in report.float_ops}
    assert reasons["linear"] is FallbackReason.BACKEND_CONSTRAINT
    assert reasons["conv2d_1"] is FallbackReason.USER_CHOICE
    assert "conv2d_1" not in [layer.name for layer in report.layers]


def test_measured_recovery_is_the_float_fallback_gain(small, quantize, x86):
    """run_with_float_ops with nothing in float is the quantized model, bit for bit; with a
    layer in float it matches re-quantizing with that layer kept in float closely."""
    _model, float_gm, q, batches = small
    index = GraphIndex.of(q)
    weights = _float_weights(GraphIndex.of(float_reference(float_gm)))
    with torch.no_grad():
        (same,) = run_with_float_ops(index, flat_inputs(q, (batches[0],)), set(), weights)
        assert torch.equal(same, q(batches[0]))
        conv = next(n for n in q.graph.nodes if n.name == "conv2d")
        (what_if,) = run_with_float_ops(index, flat_inputs(q, (batches[0],)), {conv}, weights)
        requantized = quantize(float_gm, KeepFloatQuantizer(x86(), ["conv2d"]), batches)
        assert sqnr(requantized(batches[0]), what_if) > 30


def test_inputs_must_carry_debug_handles(small):
    model, float_gm, q, batches = small
    plain = torch.export.export(model, (batches[0],)).module()
    with pytest.raises(ValueError, match="no numeric debug handles"):
        build_report(plain, q, batches)
    with pytest.raises(TypeError, match="capture_with_debug_handles"):
        build_report(model, q, batches)
    with pytest.raises(ValueError, match="empty"):
        build_report(float_gm, q, [])
    with pytest.raises(ValueError, match="captured graph takes 1"):
        build_report(float_gm, q, [(batches[0], batches[0])])


def test_exact_model_reports_infinite_sqnr(quantize, x86):
    """A model the quantizer does not touch: no layers, infinite output SQNR, JSON-safe."""
    model = nn.Sequential(nn.Softmax(-1)).eval()
    x = torch.randn(4, 6)
    float_gm = capture_with_debug_handles(model, (x,))
    q = quantize(float_gm, x86(), [x])
    report = build_report(float_gm, q, [x])
    assert report.layers == [] and math.isinf(report.model_sqnr_db)
    assert [op.reason for op in report.float_ops] == [FallbackReason.NO_PATTERN]
