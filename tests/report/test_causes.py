"""The cause/remedy diagnoses: each rule on the evidence it recognises, and on real layers."""

from __future__ import annotations

import copy

import pytest
import torch
from pt2e_helpers import ACT, FnQuantizer
from torch import nn

from fxquant.observers import MinMaxObserver
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map
from fxquant.report import build_report, capture_with_debug_handles
from fxquant.report.causes import LayerEvidence, diagnose, registered_diagnoses


def _evidence(local=20.0, propagated=18.0, **stats) -> LayerEvidence:
    return LayerEvidence(name="op", op_kind="conv2d", local_sqnr_db=local, propagated_sqnr_db=propagated,
                         stats={k: float(v) for k, v in stats.items()})


CASES = {
    "fine": (_evidence(40, 35), "quantizes well", "none needed"),
    "upstream": (_evidence(40, 15), "accumulated upstream", "fix the worst layers"),
    "depthwise": (_evidence(weight_only_sqnr_db=20, input_only_sqnr_db=30, depthwise=1, weights_per_channel=9),
                  "depthwise conv: 9 weights", "keep it in float"),
    "per-tensor weights": (_evidence(weight_only_sqnr_db=20, input_only_sqnr_db=30, weight_channel_spread=20,
                                     weight_per_channel=0), "one per-tensor scale", "per-channel"),
    "weight outliers": (_evidence(weight_only_sqnr_db=20, input_only_sqnr_db=30, weight_peak_to_rms=15,
                                  weight_per_channel=1), "weight outliers", "equalization"),
    "activation outliers": (_evidence(weight_only_sqnr_db=40, input_only_sqnr_db=20, act_outlier_ratio=9),
                            "activation outliers", "histogram/percentile"),
    "clipping": (_evidence(input_only_sqnr_db=20, act_outlier_ratio=1.2, act_clipped_fraction=0.01),
                 "too narrow", "representative data"),
    "few levels": (_evidence(input_only_sqnr_db=20, act_levels_used=0.05), "5% of the integer levels", "histogram"),
    "output": (_evidence(weight_only_sqnr_db=40, input_only_sqnr_db=40, output_only_sqnr_db=20),
               "output quantization", "output"),
    "weight rounding": (_evidence(weight_only_sqnr_db=20, weight_peak_to_rms=3, weight_per_channel=1),
                        "weight rounding", "keep it in float"),
    "nothing measured": (_evidence(), "int8 rounding", "keep it in float"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_rule(case):
    evidence, cause, remedy = CASES[case]
    found = diagnose(evidence)
    assert cause in found.cause and remedy in found.remedy


def test_catch_all_is_last():
    assert registered_diagnoses()[-1].__name__ == "_catch_all"


PER_TENSOR_WEIGHT = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_tensor_symmetric,
                                     observer_or_fake_quant_ctr=MinMaxObserver)


def _per_tensor_linear(gm: torch.fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.target == torch.ops.aten.linear.default:
            annotate_input_qspec_map(node, node.args[0], ACT)
            annotate_input_qspec_map(node, node.args[1], PER_TENSOR_WEIGHT)


def test_per_tensor_weights_with_one_loud_channel_get_the_per_channel_remedy():
    torch.manual_seed(0)
    model = nn.Linear(32, 16).eval()
    with torch.no_grad():
        model.weight[3, 0] = 40 * model.weight.abs().max()  # one output channel with a much wider range
    x = torch.randn(64, 32)
    float_gm = capture_with_debug_handles(model, (x,))
    prepared = prepare_pt2e(copy.deepcopy(float_gm), FnQuantizer(_per_tensor_linear))
    prepared(x)
    report = build_report(float_gm, convert_pt2e(prepared), [x], measure_top=0)
    (layer,) = report.layers
    assert layer.stats["weight_channel_spread"] > 20 and layer.stats["weight_per_channel"] == 0
    assert "per-channel" in layer.remedy, layer
