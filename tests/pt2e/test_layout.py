"""The torchao-layout modules fxquant.pt2e.{observer, fake_quantize, learnable_fake_quantize,
_affine_quantization} offer every name torchao 0.18's modules of the same path export, and
each is fxquant's one implementation (the same object as in the implementing module and, where
the package root has the name, as at the root)."""

from __future__ import annotations

import importlib

import pytest

import fxquant
import fxquant.fake_quantize as fq_impl
import fxquant.fake_quantize.affine as fq_affine_impl
import fxquant.numerics.blockwise as blockwise_impl
import fxquant.observers as obs_impl
import fxquant.observers.affine as affine_impl
import fxquant.observers.affine_variants as variants_impl
import fxquant.observers.base as obs_base_impl
import fxquant.observers.granularity as granularity_impl

# Read from torchao 0.18's src/torchao/quantization/pt2e/*.py (their __all__, plus the public
# module-level names other torchao modules import from there).
TORCHAO_NAMES = {
    "observer": [
        "default_affine_fixed_qparams_observer", "default_debug_observer",
        "default_dynamic_quant_observer", "default_fixed_qparams_range_0to1_observer",
        "default_fixed_qparams_range_neg1to1_observer", "default_float_qparams_observer",
        "default_float_qparams_observer_4bit", "default_histogram_observer", "default_observer",
        "default_per_channel_weight_observer", "default_placeholder_observer",
        "default_reuse_input_observer", "default_symmetric_fixed_qparams_observer",
        "default_weight_observer", "get_observer_state_dict", "load_observer_state_dict",
        "per_channel_weight_observer_range_neg_127_to_127",
        "weight_observer_range_neg_127_to_127", "FixedQParamsObserver", "HistogramObserver",
        "MinMaxObserver", "MovingAverageMinMaxObserver",
        "MovingAveragePerChannelMinMaxObserver", "NoopObserver", "ObserverBase",
        "PerChannelMinMaxObserver", "PlaceholderObserver", "RecordingObserver",
        "ReuseInputObserver", "UniformQuantizationObserverBase", "AffineQuantizedObserverBase",
        "Granularity", "MappingType", "PerAxis", "PerBlock", "PerGroup", "PerRow", "PerTensor",
        "PerToken", "TorchAODType", "ZeroPointDomain", "get_block_size", "PartialWrapper",
    ],
    "fake_quantize": [
        "FakeQuantizeBase", "FakeQuantize", "FixedQParamsFakeQuantize",
        "FusedMovingAvgObsFakeQuantize", "AffineFakeQuantize", "disable_fake_quant",
        "disable_observer", "enable_fake_quant", "enable_observer", "default_fake_quant",
        "default_weight_fake_quant", "default_dynamic_fake_quant",
        "default_fixed_qparams_range_neg1to1_fake_quant",
        "default_fixed_qparams_range_0to1_fake_quant",
        "default_symmetric_fixed_qparams_fake_quant", "default_affine_fixed_qparams_fake_quant",
        "default_per_channel_weight_fake_quant", "default_embedding_fake_quant",
        "default_embedding_fake_quant_4bit", "default_histogram_fake_quant",
        "default_fused_act_fake_quant", "default_fused_wt_fake_quant",
        "default_fused_per_channel_wt_fake_quant", "fused_wt_fake_quant_range_neg_127_to_127",
        "fused_per_channel_wt_fake_quant_range_neg_127_to_127", "default_affine_fake_quant",
        "default_groupwise_fake_quant", "default_affine_per_axis_fake_quant",
    ],
    "learnable_fake_quantize": [
        "LearnableFakeQuantize", "enable_range_learning", "disable_range_learning",
    ],
    "_affine_quantization": [
        "AffineQuantizedMinMaxObserver", "AffineQuantizedMovingAverageMinMaxObserver",
        "AffineQuantizedPlaceholderObserver", "AffineQuantizedObserverBase", "MappingType",
        "TorchAODType", "ZeroPointDomain", "Granularity", "get_block_size", "FP8_TYPES",
        "choose_qparams_affine_with_min_max", "quantize_affine", "dequantize_affine",
    ],
}

# Where the single implementation of each re-exported name lives.
_IMPLEMENTATION = {
    "PartialWrapper": obs_base_impl._PartialWrapper,
    "AffineFakeQuantize": fq_affine_impl.AffineFakeQuantize,
    "default_affine_fake_quant": fq_affine_impl.default_affine_fake_quant,
    "default_groupwise_fake_quant": fq_affine_impl.default_groupwise_fake_quant,
    "default_affine_per_axis_fake_quant": fq_affine_impl.default_affine_per_axis_fake_quant,
    "AffineQuantizedMinMaxObserver": affine_impl.AffineQuantizedMinMaxObserver,
    "AffineQuantizedObserverBase": affine_impl.AffineQuantizedObserverBase,
    "AffineQuantizedMovingAverageMinMaxObserver":
        variants_impl.AffineQuantizedMovingAverageMinMaxObserver,
    "AffineQuantizedPlaceholderObserver": variants_impl.AffineQuantizedPlaceholderObserver,
    "MappingType": blockwise_impl.MappingType,
    "TorchAODType": blockwise_impl.TorchAODType,
    "ZeroPointDomain": blockwise_impl.ZeroPointDomain,
    "Granularity": granularity_impl.Granularity,
    "get_block_size": granularity_impl.get_block_size,
    "FP8_TYPES": blockwise_impl.FLOAT8_DTYPES,
    "choose_qparams_affine_with_min_max": blockwise_impl.choose_qparams_affine_with_min_max,
    "LearnableFakeQuantize": fq_impl.LearnableFakeQuantize,
}
# Functions defined by the layout modules themselves (adapters, module-wide switches).
# Names whose torchao version differs from torch.ao's: the PT2E layout has its own. torchao's
# LearnableFakeQuantize (lazy sizing, range-learning switches) is not torch.ao's
# _LearnableFakeQuantize-style class that fxquant.LearnableFakeQuantize is.
_OWN = {"quantize_affine", "dequantize_affine", "enable_range_learning", "disable_range_learning",
        "LearnableFakeQuantize"}

_PAIRS = [(module, name) for module, names in TORCHAO_NAMES.items() for name in names]


def _layout(module: str):
    return importlib.import_module(f"fxquant.pt2e.{module}")


def _implementation(name: str):
    if name in _IMPLEMENTATION:
        return _IMPLEMENTATION[name]
    for impl in (obs_impl, fq_impl):
        if name in impl.__all__:
            return getattr(impl, name)
    raise AssertionError(f"no implementation known for {name}")


@pytest.mark.parametrize("module,name", _PAIRS, ids=[f"{m}.{n}" for m, n in _PAIRS])
def test_torchao_name_exists_and_is_listed(module, name):
    layout = _layout(module)
    assert hasattr(layout, name), f"fxquant.pt2e.{module} lacks torchao's {name}"
    assert name in layout.__all__


@pytest.mark.parametrize("module,name", [p for p in _PAIRS if p[1] not in _OWN],
                         ids=[f"{m}.{n}" for m, n in _PAIRS if n not in _OWN])
def test_name_is_the_one_implementation(module, name):
    obj = getattr(_layout(module), name)
    assert obj is _implementation(name)
    if hasattr(fxquant, name):
        assert getattr(fxquant, name) is obj, f"fxquant.{name} is a different object"


@pytest.mark.parametrize("module", sorted(TORCHAO_NAMES))
def test_all_lists_only_names_that_exist(module):
    layout = _layout(module)
    assert sorted(set(layout.__all__)) == sorted(layout.__all__)
    missing = [n for n in layout.__all__ if not hasattr(layout, n)]
    assert missing == []


def test_shared_names_agree_across_layout_modules():
    observer, affine = _layout("observer"), _layout("_affine_quantization")
    shared = set(observer.__all__) & set(affine.__all__)
    assert {"AffineQuantizedObserverBase", "MappingType", "get_block_size"} <= shared
    assert all(getattr(observer, n) is getattr(affine, n) for n in shared)


def test_pt2e_learnable_fake_quantize_is_torchaos_and_the_root_one_torch_aos():
    from fxquant.pt2e.learnable_fake_quantize import LearnableFakeQuantize as TorchaoStyle

    assert importlib.import_module("fxquant.pt2e").LearnableFakeQuantize is TorchaoStyle
    assert fxquant.LearnableFakeQuantize is fq_impl.LearnableFakeQuantize
    assert TorchaoStyle is not fq_impl.LearnableFakeQuantize
    assert hasattr(TorchaoStyle, "enable_range_learning")
