"""Every default_*_fake_quant constructor: built with upstream's arguments (same attributes
and observer configuration) and numerically identical to upstream's on the same batches."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.fake_quantize as upstream_fake_quantize

from fxquant import fake_quantize as fq
from fxquant.fake_quantize import defaults

# name -> input shape (weights: (out_channels, in_features); embeddings: (rows, dim))
NUMERIC_DEFAULTS = {
    "default_fake_quant": (4, 8),
    "default_weight_fake_quant": (6, 5),
    "default_per_channel_weight_fake_quant": (6, 5),
    "default_embedding_fake_quant": (5, 6),
    "default_embedding_fake_quant_4bit": (5, 6),
    "default_fixed_qparams_range_neg1to1_fake_quant": (4, 8),
    "default_fixed_qparams_range_0to1_fake_quant": (4, 8),
    "default_symmetric_fixed_qparams_fake_quant": (4, 8),
    "default_affine_fixed_qparams_fake_quant": (4, 8),
    "default_fused_act_fake_quant": (4, 8),
    "default_fused_wt_fake_quant": (6, 5),
    "default_fused_per_channel_wt_fake_quant": (6, 5),
    "fused_wt_fake_quant_range_neg_127_to_127": (6, 5),
    "fused_per_channel_wt_fake_quant_range_neg_127_to_127": (6, 5),
}
ALL_DEFAULTS = sorted(
    name for name in upstream_fake_quantize.__all__ if "default" in name or "fused_" in name
    if name != "FusedMovingAvgObsFakeQuantize"
)
_OBSERVER_FIELDS = ("dtype", "qscheme", "quant_min", "quant_max", "reduce_range",
                    "averaging_constant", "ch_axis", "eps", "is_dynamic", "scale", "zero_point")


def _same_configuration(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    assert type(ours).__name__ == type(theirs).__name__
    for name in ("dtype", "qscheme", "quant_min", "quant_max", "ch_axis", "is_per_channel",
                 "is_dynamic"):
        assert getattr(ours, name) == getattr(theirs, name), name
    obs_ours, obs_theirs = ours.activation_post_process, theirs.activation_post_process
    assert type(obs_ours).__name__ == type(obs_theirs).__name__
    for name in _OBSERVER_FIELDS:
        if hasattr(obs_theirs, name):
            a, b = getattr(obs_ours, name), getattr(obs_theirs, name)
            same = torch.equal(a, b) if isinstance(b, torch.Tensor) else a == b
            assert same, f"observer {name}: {a} != upstream {b}"


def test_every_upstream_default_is_exported():
    assert len(ALL_DEFAULTS) == 16
    missing = [name for name in ALL_DEFAULTS if name not in fq.__all__]
    assert not missing
    assert set(ALL_DEFAULTS) <= set(defaults.__all__)


@pytest.mark.parametrize("name", sorted(NUMERIC_DEFAULTS))
def test_default_matches_upstream(name, agree, batches):
    ours, theirs = getattr(fq, name)(), getattr(tq, name)()
    _same_configuration(ours, theirs)
    assert repr(ours) == repr(theirs)
    assert agree(ours, theirs, batches(NUMERIC_DEFAULTS[name])) == 6


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("default_symmetric_fixed_qparams_fake_quant",
         "default_fixed_qparams_range_neg1to1_fake_quant"),
        ("default_affine_fixed_qparams_fake_quant", "default_fixed_qparams_range_0to1_fake_quant"),
    ],
)
def test_legacy_names_are_aliases(old, new):
    assert getattr(fq, old) is getattr(fq, new)


def test_each_call_builds_a_new_module():
    first, second = fq.default_fake_quant(), fq.default_fake_quant()
    assert first is not second
    assert first.activation_post_process is not second.activation_post_process


@pytest.mark.parametrize("name", sorted(NUMERIC_DEFAULTS))
def test_deepcopy_and_save_load_continue_identically(name, batches):
    # prepare_qat deep-copies models and checkpoints pickle them whole
    module = getattr(fq, name)()
    stream = batches(NUMERIC_DEFAULTS[name])
    module(next(stream))
    clone = copy.deepcopy(module)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for x in stream:
        y = module(x)
        assert torch.equal(clone(x), y) and torch.equal(loaded(x), y)


def test_histogram_default_configuration():
    # The histogram observer searches its range differently from upstream's (by design:
    # faster, equal or lower error), so only the configuration and the grid are compared.
    ours, theirs = fq.default_histogram_fake_quant(), tq.default_histogram_fake_quant()
    assert type(ours.activation_post_process).__name__ == "HistogramObserver"
    for name in ("dtype", "qscheme", "quant_min", "quant_max", "ch_axis", "is_per_channel"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.activation_post_process.reduce_range is True
    x = torch.randn(64, 8)
    y = ours(x)
    q = y / ours.scale + ours.zero_point
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert bool((q.round() >= 0).all() and (q.round() <= 127).all())


def test_dynamic_default_matches_upstream(agree, batches):
    ours, theirs = fq.default_dynamic_fake_quant(), tq.default_dynamic_fake_quant()
    _same_configuration(ours, theirs)
    assert ours.is_dynamic is True
    assert agree(ours, theirs, batches((4, 8))) == 6
