"""The package root exposes every name of SPEC sections 2-4, and each one works."""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch
import torch.ao.quantization as tq

import fxquant

OBSERVER_CLASSES = [
    "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver", "HistogramObserver",
]
SPEC_NAMES = OBSERVER_CLASSES + [
    "ObserverBase", "UniformQuantizationObserverBase", "PlaceholderObserver", "RecordingObserver",
    "NoopObserver", "FixedQParamsObserver", "ReuseInputObserver", "AffineQuantizedObserverBase",
    "Granularity", "PerTensor", "PerAxis", "PerGroup", "PerRow", "PerToken", "PerBlock",
    "MappingType", "ZeroPointDomain", "TorchAODType", "get_block_size",
    "get_observer_state_dict", "load_observer_state_dict",
    "default_observer", "default_weight_observer", "default_per_channel_weight_observer",
    "default_histogram_observer", "default_placeholder_observer", "default_debug_observer",
    "default_dynamic_quant_observer", "default_float_qparams_observer",
    "default_float_qparams_observer_4bit", "default_reuse_input_observer",
    "default_fixed_qparams_range_0to1_observer", "default_fixed_qparams_range_neg1to1_observer",
    "weight_observer_range_neg_127_to_127", "per_channel_weight_observer_range_neg_127_to_127",
    # section 3
    "FakeQuantizeBase", "FakeQuantize", "FixedQParamsFakeQuantize", "FusedMovingAvgObsFakeQuantize",
    "LearnableFakeQuantize", "default_fake_quant", "default_weight_fake_quant",
    "default_per_channel_weight_fake_quant", "default_histogram_fake_quant",
    "default_fused_act_fake_quant", "default_fused_wt_fake_quant",
    "default_fused_per_channel_wt_fake_quant", "default_embedding_fake_quant",
    "default_embedding_fake_quant_4bit", "default_dynamic_fake_quant",
    "default_fixed_qparams_range_0to1_fake_quant", "default_fixed_qparams_range_neg1to1_fake_quant",
    "fused_wt_fake_quant_range_neg_127_to_127", "fused_per_channel_wt_fake_quant_range_neg_127_to_127",
    "enable_observer", "disable_observer", "enable_fake_quant", "disable_fake_quant",
    # section 4
    "QConfig", "QConfigDynamic", "QConfigAny", "qconfig_equals", "get_default_qconfig",
    "get_default_qat_qconfig", "QConfigMapping", "get_default_qconfig_mapping",
    "get_default_qat_qconfig_mapping",
]
# TorchScript entry points: TorchScript is deprecated upstream and lowest priority (SPEC §7).
JIT_NAMES = {"convert_dynamic_jit", "convert_jit", "fuse_conv_bn_jit", "prepare_dynamic_jit",
             "prepare_jit", "quantize_dynamic_jit", "quantize_jit", "script_qconfig", "script_qconfig_dict"}
UPSTREAM_OBSERVER_AND_CONFIG_NAMES = [
    n for n in tq.__all__
    if n not in JIT_NAMES
    and (
        n.startswith(("default_", "weight_observer", "per_channel_weight", "fused_", "QConfig",
                      "qconfig_", "get_default_q", "enable_", "disable_", "get_observer_state",
                      "load_observer_state"))
        or n.endswith(("Observer", "ObserverBase", "FakeQuantize", "FakeQuantizeBase"))
    )
]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_spec_name_is_at_root_and_listed(name):
    assert hasattr(fxquant, name), name
    assert name in fxquant.__all__


@pytest.mark.parametrize("name", UPSTREAM_OBSERVER_AND_CONFIG_NAMES)
def test_upstream_observer_fake_quant_and_config_names_exist(name):
    assert hasattr(fxquant, name), f"{name} is exported by torch.ao.quantization but not by fxquant"


@pytest.mark.parametrize("name", sorted(set(tq.__all__) - JIT_NAMES))
def test_every_upstream_name_except_torchscript_exists(name):
    assert hasattr(fxquant, name), f"{name} is exported by torch.ao.quantization but not by fxquant"


def _default_constructors():
    return [n for n in fxquant.__all__
            if (n.startswith("default_") and "qconfig" not in n and n != "default_eval_fn")
            or n.endswith("range_neg_127_to_127")]


def test_default_eval_fn_runs_the_model_over_the_data():
    seen = []
    model = torch.nn.Linear(3, 2)
    model.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    data = [(torch.randn(4, 3), torch.zeros(4)) for _ in range(3)]
    fxquant.default_eval_fn(model, data)
    assert len(seen) == 3 and all(torch.equal(a, d[0]) for a, d in zip(seen, data))


@pytest.mark.parametrize("name", _default_constructors())
def test_every_default_constructor_builds_and_runs(name):
    ctor = getattr(fxquant, name)
    module = ctor()
    x = torch.randn(4, 8)
    out = module(x)
    assert out.shape == x.shape


@pytest.mark.parametrize("name", OBSERVER_CLASSES)
def test_observers_work_from_the_root(name):
    obs = getattr(fxquant, name)() if "PerChannel" not in name else getattr(fxquant, name)(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    obs(torch.randn(4, 16))
    scale, _zero_point = obs.calculate_qparams()
    assert torch.isfinite(scale).all() and (scale > 0).all()


def test_package_does_not_import_upstream_framework():
    """The framework is ours: only the q/dq op registration may come from torch.ao."""
    allowed = {"torch.ao.quantization.fx._decomposed"}
    root = pathlib.Path(fxquant.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.startswith(("torch.ao.", "torchao")) else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names
                          if n.startswith(("torch.ao", "torchao")) and n not in allowed]
    assert offenders == []
