"""conv/linear → ReLU6/hardtanh: observed after the clamp by default, as upstream (before it)
with ``upstream_compatible=True`` backend configs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
import torch.nn.functional as F
from torch import nn

import fxquant
from fxquant.backend_config import get_native_backend_config, get_x86_backend_config
from fxquant.backend_config.clamp_output import observe_after_clamp
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx


class ClampNet(nn.Module):
    """conv-bn-relu6 (module), conv → F.hardtanh, depthwise conv → nn.Hardtanh(-1, 1),
    linear → F.relu6: each clamp kind after each root kind."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.relu6 = nn.ReLU6()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.tanh_clamp = nn.Hardtanh(-1.0, 1.0)
        self.fc = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu6(self.bn(self.conv(x)))
        x = F.hardtanh(self.conv2(x), 0.0, 6.0)
        x = self.tanh_clamp(self.dw(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.relu6(self.fc(x))


def _model_and_batches() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = ClampNet()
    with torch.no_grad():
        model.conv.weight.mul_(4.0)  # conv outputs well beyond the clamp
        model.bn.running_var.fill_(0.5)
    g = torch.Generator().manual_seed(3)
    return model.eval(), [torch.randn(4, 3, 10, 10, generator=g) for _ in range(4)]


def _minmax(ns):
    qconfig = ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                         weight=ns.default_per_channel_weight_observer)
    return ns.get_default_qconfig_mapping("x86").set_global(qconfig)


def _observed_nodes(gm: torch.fx.GraphModule) -> list[str]:
    return [n.args[0].name for n in gm.graph.nodes
            if n.op == "call_module" and "activation_post_process" in str(n.target)]


def test_ready_configs_have_clamp_patterns_unless_upstream_compatible():
    assert (nn.ReLU6, nn.Conv2d) in get_x86_backend_config()._pattern_complex_format_to_config
    assert (F.hardtanh, F.linear) in get_native_backend_config()._pattern_complex_format_to_config
    plain = get_x86_backend_config(upstream_compatible=True)
    assert (nn.ReLU6, nn.Conv2d) not in plain._pattern_complex_format_to_config
    assert len(observe_after_clamp(plain).configs) > len(plain.configs)


def test_upstream_compatible_config_equals_upstream():
    model, batches = _model_and_batches()
    ours = prepare_fx(copy.deepcopy(model), _minmax(fxquant), (batches[0],),
                      backend_config=get_native_backend_config(upstream_compatible=True))
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), _minmax(tq), (batches[0],))
    assert _observed_nodes(ours) == _observed_nodes(upstream)
    for b in batches:
        ours(b)
        upstream(b)
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    oracle_reference = upstream_fx._convert_to_reference_decomposed_fx(copy.deepcopy(upstream))
    lowered, oracle = convert_fx(ours), upstream_fx.convert_fx(upstream)
    for b in batches:
        assert torch.equal(reference(b), oracle_reference(b))
        assert torch.equal(lowered(b), oracle(b))


def test_default_observes_the_clamp_output_not_the_conv_output():
    model, batches = _model_and_batches()
    prepared = prepare_fx(copy.deepcopy(model), _minmax(fxquant), (batches[0],))
    observed = _observed_nodes(prepared)
    assert "relu6" in observed and "conv" not in observed  # conv (bn folded) → relu6
    assert "hardtanh" in observed and "conv2" not in observed
    assert "tanh_clamp" in observed and "dw" not in observed
    assert "relu6_1" in observed and "fc" not in observed


@pytest.mark.parametrize("mapping", ["minmax", "default_x86"])
def test_default_lowered_equals_its_reference_and_is_closer_to_float(mapping):
    model, batches = _model_and_batches()
    qmap = _minmax(fxquant) if mapping == "minmax" else fxquant.get_default_qconfig_mapping("x86")
    results = {}
    for name, backend in [("default", None), ("upstream", get_native_backend_config(upstream_compatible=True))]:
        prepared = prepare_fx(copy.deepcopy(model), qmap, (batches[0],), backend_config=backend)
        for b in batches:
            prepared(b)
        reference = convert_to_reference_fx(copy.deepcopy(prepared))
        lowered = convert_fx(prepared)
        with torch.no_grad():
            for b in batches:
                # the quantized kernels on the same integers: within one output step
                step = lowered(b) - reference(b)
                assert step.abs().max() <= 6.0 / 255 + 1e-6
        results[name] = sum(fxquant.metrics.sqnr(model(b), lowered(b)) for b in batches) / len(batches)
    assert results["default"] > results["upstream"] + 3.0, results


def test_default_lowering_runs_quantized_kernels_without_float_clamps():
    model, batches = _model_and_batches()
    prepared = prepare_fx(copy.deepcopy(model), _minmax(fxquant), (batches[0],))
    for b in batches:
        prepared(b)
    lowered = convert_fx(prepared)
    assert type(lowered.conv).__module__.startswith("fxquant.nn.quantized")
    assert type(lowered.fc).__module__.startswith("fxquant.nn.quantized")
    dequantized = [n for n in lowered.graph.nodes if n.op == "call_method" and n.target == "dequantize"]
    assert len(dequantized) == 1  # only the model output leaves the int8 domain


def test_qat_observes_after_the_clamp_and_converts_to_int8():
    model, batches = _model_and_batches()
    model.train()
    prepared = fxquant.quantize_fx.prepare_qat_fx(copy.deepcopy(model),
                                                  fxquant.get_default_qat_qconfig_mapping("x86"), (batches[0],))
    observed = _observed_nodes(prepared)
    assert "relu6" in observed and "conv" not in observed
    assert type(prepared.conv).__name__ == "ConvBn2d" and type(prepared.conv).__module__.startswith("fxquant.nn.intrinsic.qat")
    for b in batches:
        prepared(b)
    prepared.eval()
    reference = convert_to_reference_fx(copy.deepcopy(prepared))
    lowered = convert_fx(prepared)
    with torch.no_grad():
        for b in batches:
            torch.testing.assert_close(lowered(b), reference(b), rtol=0, atol=6.0 / 127 + 1e-6)
