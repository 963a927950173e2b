"""The numeric debugger: handles tag every node and survive prepare/convert; loggers record
each handle's output; compare_results gives per-handle SQNR/MSE between float and quantized."""

from __future__ import annotations

import math

import pytest
import torch
from pt2e_helpers import A, ConvBnReLUNet, FnQuantizer, annotate_conv_linear, export
from torch.fx import GraphModule

from fxquant.pt2e._numeric_debugger import (
    CUSTOM_KEY,
    NUMERIC_DEBUG_HANDLE_KEY,
    NodeSourceDebugInfo,
    OutputLogger,
    QuantizationComparisonResult,
    compare_results,
    extract_results_from_loggers,
    generate_numeric_debug_handle,
    prepare_for_propagation_comparison,
)
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e


def handle(node: torch.fx.Node) -> int | None:
    return node.meta.get(CUSTOM_KEY, {}).get(NUMERIC_DEBUG_HANDLE_KEY)


def handles_by_target(gm: GraphModule) -> dict:
    return {n.target: handle(n) for n in gm.graph.nodes if n.op == "call_function" and handle(n) is not None}


def quantize(model: GraphModule, x: torch.Tensor) -> GraphModule:
    prepared = prepare_pt2e(model, FnQuantizer(annotate_conv_linear))
    prepared(x)
    return convert_pt2e(prepared)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8)


@pytest.fixture
def tagged(x) -> torch.export.ExportedProgram:
    ep = torch.export.export(ConvBnReLUNet().eval(), (x,))
    generate_numeric_debug_handle(ep)
    return ep


def test_every_op_node_gets_a_unique_handle(tagged):
    graph_nodes = [n for n in tagged.graph.nodes if n.op not in ("placeholder", "output")]
    handles = [handle(n) for n in graph_nodes]
    assert len(graph_nodes) == 5  # conv2d, batch_norm, relu, mean, linear
    assert sorted(handles) == list(range(5))
    assert all(handle(n) is None for n in tagged.graph.nodes if n.op in ("placeholder", "output"))


def test_existing_handles_are_kept_and_new_ones_do_not_collide(x):
    ep = torch.export.export(ConvBnReLUNet().eval(), (x,))
    relu = next(n for n in ep.graph.nodes if n.target == A.relu.default)
    relu.meta[CUSTOM_KEY] = {NUMERIC_DEBUG_HANDLE_KEY: 10}
    generate_numeric_debug_handle(ep)
    generate_numeric_debug_handle(ep)  # idempotent
    handles = [handle(n) for n in ep.graph.nodes if n.op == "call_function"]
    assert handle(relu) == 10
    assert sorted(handles) == [10, 11, 12, 13, 14]


def test_generate_refuses_a_graph_module(x):
    with pytest.raises(TypeError, match="expects an ExportedProgram"):
        generate_numeric_debug_handle(export(ConvBnReLUNet(), x))  # type: ignore[arg-type]


def test_handles_survive_prepare_and_convert(tagged, x):
    exported = handles_by_target(tagged.module())
    converted = quantize(tagged.module(), x)
    kept = {n.target: handle(n) for n in converted.graph.nodes
            if n.op == "call_function" and n.target in exported}
    # batch norm is folded into the conv (which carries the conv's handle today, the batch
    # norm's, which the fold hands over); every other op keeps its handle
    conv_handle = kept.pop(A.conv2d.default)
    assert conv_handle in (exported[A.conv2d.default], exported[A.batch_norm.default])
    assert kept == {t: h for t, h in exported.items() if t not in (A.conv2d.default, A.batch_norm.default)}
    # the q/dq after an op carry that op's handle
    q_after_linear = next(iter(next(n for n in converted.graph.nodes if n.target == A.linear.default).users))
    assert q_after_linear.target == torch.ops.quantized_decomposed.quantize_per_tensor.default
    assert handle(q_after_linear) == exported[A.linear.default]


def test_loggers_leave_model_and_outputs_unchanged(tagged, x):
    model = tagged.module()
    logged = prepare_for_propagation_comparison(model)
    logged.graph.lint()
    assert not any(isinstance(m, OutputLogger) for m in model.modules())
    loggers = [m for m in logged.children() if isinstance(m, OutputLogger)]
    assert sorted(m.debug_handle for m in loggers) == list(range(5))  # one per handle
    assert torch.equal(logged(x), model(x))
    results = extract_results_from_loggers(logged)
    assert set(results) == set(range(5))
    name, _, stats = results[handles_by_target(model)[A.linear.default]]
    assert name == "linear" and torch.equal(stats[0], model(x))


def test_logger_in_quantized_model_sits_after_the_ops_dequantize(tagged, x):
    logged = prepare_for_propagation_comparison(quantize(tagged.module(), x))
    linear_handle = handles_by_target(tagged.module())[A.linear.default]
    logger = next(m for m in logged.children() if isinstance(m, OutputLogger) and m.debug_handle == linear_handle)
    assert logger.node_name.startswith("dequantize_per_tensor")


def run_both(tagged: torch.export.ExportedProgram, x: torch.Tensor, *calls: torch.Tensor):
    ref = prepare_for_propagation_comparison(tagged.module())
    actual = prepare_for_propagation_comparison(quantize(tagged.module(), x))
    for inp in calls:
        ref(inp)
        actual(inp)
    return compare_results(extract_results_from_loggers(ref), extract_results_from_loggers(actual))


def test_float_against_itself_is_exact(tagged, x):
    ref = prepare_for_propagation_comparison(tagged.module())
    other = prepare_for_propagation_comparison(tagged.module())
    ref(x)
    other(x)
    summary = compare_results(extract_results_from_loggers(ref), extract_results_from_loggers(other))
    assert len(summary) == 5
    for s in summary.values():
        assert math.isinf(float(s.results[0].sqnr)) and float(s.results[0].mse_loss) == 0.0


def test_float_against_quantized_gives_finite_sqnr_per_handle(tagged, x):
    summary = run_both(tagged, x, x, torch.randn(2, 3, 8, 8))
    by_target = handles_by_target(tagged.module())
    # one of conv / batch norm has no node left after folding
    assert len(summary) == 4 and {by_target[t] for t in (A.relu.default, A.mean.dim, A.linear.default)} <= set(summary)
    for key, s in summary.items():
        assert len(s.results) == 2  # one comparison per forward call
        db = float(s.results[0].sqnr)
        assert 20.0 < db < math.inf, f"handle {key} ({s.ref_node_name}): {db:.1f} dB"
        assert float(s.results[0].mse_loss) > 0
    linear = summary[by_target[A.linear.default]]
    assert linear.ref_node_name == "linear" and linear.ref_module_stack == "fc"
    assert linear.debug_info == linear.handle


def test_models_without_handles_are_keyed_by_provenance(x):
    model = export(ConvBnReLUNet(), x)
    ref = prepare_for_propagation_comparison(model)
    actual = prepare_for_propagation_comparison(quantize(export(ConvBnReLUNet(), x), x))
    ref(x)
    summary = compare_results(extract_results_from_loggers(ref), extract_results_from_loggers(ref))
    assert {k.name for k in summary} == {"conv2d", "batch_norm", "relu", "mean", "linear"}
    assert all(isinstance(k, NodeSourceDebugInfo) for k in summary)
    actual(x)
    assert all(isinstance(k, NodeSourceDebugInfo) for k in extract_results_from_loggers(actual))


def test_results_follow_nested_outputs():
    result = QuantizationComparisonResult(actual=(torch.ones(3), {"a": torch.ones(2)}),
                                          ref=(torch.ones(3) * 2, {"a": torch.ones(2)}))
    mse = result.mse_loss
    assert isinstance(mse, tuple) and float(mse[0]) == 1.0 and float(mse[1]["a"]) == 0.0
    assert math.isinf(float(result.sqnr[1]["a"]))


def test_mismatched_shapes_are_refused_with_the_key():
    with pytest.raises(ValueError, match="different shapes"):
        QuantizationComparisonResult(actual=torch.ones(3), ref=torch.ones(4))
    with pytest.raises(ValueError, match="debug key 7: cannot compare ref node a with actual node b"):
        compare_results({7: ("a", None, [torch.ones(3)])}, {7: ("b", None, [torch.ones(4)])})


def test_keys_missing_on_one_side_are_skipped():
    summary = compare_results({1: ("a", None, [torch.ones(2)]), 2: ("b", None, [torch.ones(2)])},
                              {2: ("b", None, [torch.ones(2)])})
    assert list(summary) == [2]


def test_batch_norm_folding_keeps_comparisons_like_for_like(x):
    model = ConvBnReLUNet().eval()
    with torch.no_grad():  # a batch norm far from identity
        model.bn.running_mean.fill_(2.0)
        model.bn.running_var.fill_(4.0)
        model.bn.weight.fill_(3.0)
        model.bn.bias.fill_(1.0)
    ep = torch.export.export(model, (x,))
    generate_numeric_debug_handle(ep)
    ref = prepare_for_propagation_comparison(ep.module())
    actual = prepare_for_propagation_comparison(quantize(ep.module(), x))
    ref(x)
    actual(x)
    summary = compare_results(extract_results_from_loggers(ref), extract_results_from_loggers(actual))
    worst = min(float(s.results[0].sqnr) for s in summary.values())
    assert worst > 20.0, f"worst per-handle SQNR {worst:.1f} dB"
