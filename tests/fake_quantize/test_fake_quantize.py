"""FakeQuantize against torch.ao.quantization.FakeQuantize (the oracle): same arguments,
same batches -> bit-identical outputs, scale/zero_point and input gradients."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from hypothesis import given, settings
from hypothesis import strategies as st

from fxquant.fake_quantize import FakeQuantize
from fxquant.numerics.dtypes import QuantizationRangeError
from fxquant.observers.base import NonFiniteInputError, QuantizationWarning
from fxquant.observers.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

_OBSERVERS = {
    "minmax": (MinMaxObserver, tq.MinMaxObserver),
    "moving": (MovingAverageMinMaxObserver, tq.MovingAverageMinMaxObserver),
    "perchannel": (PerChannelMinMaxObserver, tq.PerChannelMinMaxObserver),
    "moving_perchannel": (
        MovingAveragePerChannelMinMaxObserver,
        tq.MovingAveragePerChannelMinMaxObserver,
    ),
}

# (observer key, FakeQuantize kwargs, input shape)
CONFIGS: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("moving", {"quant_min": 0, "quant_max": 255, "dtype": torch.quint8}, (4, 8)),
    ("moving", {"dtype": torch.quint8, "reduce_range": True}, (4, 8)),
    ("moving", {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
                    "qscheme": torch.per_tensor_symmetric}, (4, 8)),
    ("moving", {"quant_min": -127, "quant_max": 127, "dtype": torch.qint8,
                    "qscheme": torch.per_tensor_symmetric, "eps": 2**-12}, (4, 8)),
    ("moving", {"quant_min": 0, "quant_max": 15, "dtype": torch.quint8, "averaging_constant": 0.5},
     (2, 3, 5)),
    ("minmax", {"dtype": torch.qint8, "qscheme": torch.per_tensor_affine}, (16,)),
    ("minmax", {"quant_min": 0, "quant_max": 255, "dtype": torch.quint8,
                    "qscheme": torch.per_tensor_symmetric}, (4, 8)),
    ("perchannel", {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
                        "qscheme": torch.per_channel_symmetric, "ch_axis": 0}, (6, 5)),
    ("perchannel", {"dtype": torch.quint8, "qscheme": torch.per_channel_affine, "ch_axis": 1},
     (2, 3, 4, 4)),
    ("moving_perchannel", {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
                               "qscheme": torch.per_channel_affine, "ch_axis": 1}, (3, 7)),
    ("moving_perchannel", {"quant_min": 0, "quant_max": 255, "dtype": torch.quint8,
                               "qscheme": torch.per_channel_affine_float_qparams, "ch_axis": 0,
                               "averaging_constant": 1}, (5, 6)),
]
IDS = [
    "uint8-affine", "uint8-reduce_range", "int8-symmetric", "int8-sym-127", "4bit-range-avg0.5",
    "minmax-int8-affine", "minmax-uint8-symmetric", "perchannel-int8-sym-axis0",
    "perchannel-uint8-affine-axis1-4d", "moving-perchannel-axis1", "float-qparams",
]


def _pair(key: str, kwargs: dict[str, Any]) -> tuple[FakeQuantize, tq.FakeQuantize]:
    ours_obs, theirs_obs = _OBSERVERS[key]
    return FakeQuantize(ours_obs, **kwargs), tq.FakeQuantize(theirs_obs, **kwargs)


@pytest.mark.parametrize(("key", "kwargs", "shape"), CONFIGS, ids=IDS)
def test_matches_upstream_over_batches(key, kwargs, shape, agree, batches):
    ours, theirs = _pair(key, kwargs)
    assert agree(ours, theirs, batches(shape)) == 6
    for a, b in zip(ours.calculate_qparams(), theirs.calculate_qparams()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("key", "kwargs", "shape"), CONFIGS, ids=IDS)
def test_attributes_match_upstream(key, kwargs, shape):
    ours, theirs = _pair(key, kwargs)
    for name in ("quant_min", "quant_max", "dtype", "qscheme", "ch_axis", "is_per_channel",
                 "is_dynamic"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.zero_point.dtype == theirs.zero_point.dtype
    assert ours.fake_quant_enabled.dtype == torch.uint8
    assert repr(ours) == repr(theirs)


def test_disabled_observer_freezes_qparams(agree, batches):
    ours, theirs = _pair("moving", {"dtype": torch.quint8})
    first = batches((4, 8))
    agree(ours, theirs, [next(first)])
    frozen = ours.scale.clone(), ours.zero_point.clone()
    seen_min = ours.activation_post_process.min_val.clone()
    ours.disable_observer()
    theirs.disable_observer()
    assert ours.observer_enabled.tolist() == [0]
    agree(ours, theirs, first)  # the rest: wider and shifted ranges
    assert torch.equal(ours.scale, frozen[0]) and torch.equal(ours.zero_point, frozen[1])
    assert torch.equal(ours.activation_post_process.min_val, seen_min)  # no statistics either


def test_disabled_fake_quant_is_identity_but_still_observes():
    fq = FakeQuantize(dtype=torch.quint8)
    fq.disable_fake_quant()
    x = torch.randn(3, 5, requires_grad=True)
    y = fq(x)
    assert y is x
    assert not torch.equal(fq.scale, torch.tensor([1.0]))  # qparams were refreshed


def test_negative_channel_axis_equals_positive_one(batches, agree):
    # torch's kernel rejects ch_axis=-1 (upstream fails); we normalise it.
    kwargs = {"dtype": torch.qint8, "qscheme": torch.per_channel_affine}
    ours = FakeQuantize(MovingAveragePerChannelMinMaxObserver, ch_axis=-1, **kwargs)
    theirs = tq.FakeQuantize(tq.MovingAveragePerChannelMinMaxObserver, ch_axis=2, **kwargs)
    assert agree(ours, theirs, batches((2, 3, 4))) == 6
    assert ours.ch_axis == -1


def test_observer_sees_a_detached_input():
    fq = FakeQuantize(dtype=torch.quint8)
    x = torch.randn(8, requires_grad=True)
    fq(x).sum().backward()
    assert not fq.activation_post_process.min_val.requires_grad
    assert x.grad is not None


@pytest.mark.parametrize("direction", ["upstream_to_ours", "ours_to_upstream"])
@pytest.mark.parametrize(
    ("key", "kwargs", "shape"),
    [CONFIGS[0], CONFIGS[7], CONFIGS[10]],
    ids=["per-tensor", "per-channel", "float-qparams"],
)
def test_state_dict_round_trip_with_upstream(direction, key, kwargs, shape, batches, agree):
    trained_ours, trained_theirs = _pair(key, kwargs)
    agree(trained_ours, trained_theirs, batches(shape))
    fresh_ours, fresh_theirs = _pair(key, kwargs)
    if direction == "upstream_to_ours":
        src, dst = trained_theirs, fresh_ours
    else:
        src, dst = trained_ours, fresh_theirs
    state = src.state_dict()
    assert set(state) == set(trained_ours.state_dict()) == set(trained_theirs.state_dict())
    dst.load_state_dict(state)
    for name, value in state.items():
        assert torch.equal(dst.state_dict()[name], value), name
    # the restored module continues exactly like the one it came from
    assert agree(dst, src, batches(shape, seed=1)) == 6


def test_per_channel_state_dict_resizes_initial_buffers(batches):
    src = FakeQuantize(PerChannelMinMaxObserver, dtype=torch.qint8,
                       qscheme=torch.per_channel_symmetric, ch_axis=0)
    src(next(batches((6, 5))))
    dst = FakeQuantize(PerChannelMinMaxObserver, dtype=torch.qint8,
                       qscheme=torch.per_channel_symmetric, ch_axis=0)
    assert dst.scale.shape == (1,)
    dst.load_state_dict(src.state_dict())
    assert dst.scale.shape == (6,) and torch.equal(dst.zero_point, src.zero_point)


def test_missing_qparams_in_strict_load_are_reported():
    state = FakeQuantize().state_dict()
    del state["scale"]
    with pytest.raises(RuntimeError, match="scale"):
        FakeQuantize().load_state_dict(state)


def test_empty_batch_warns_and_returns_empty():
    fq = FakeQuantize(dtype=torch.quint8)
    with pytest.warns(QuantizationWarning):
        y = fq(torch.empty(0, 4))
    assert y.shape == (0, 4)


def test_non_finite_batch_is_rejected():
    fq = FakeQuantize(dtype=torch.quint8)
    with pytest.raises(NonFiniteInputError, match="NaN or Inf"):
        fq(torch.tensor([0.0, float("nan"), 1.0]))


# ---- bad configuration ---------------------------------------------------------------------


def test_quant_min_above_quant_max_is_rejected():
    with pytest.raises(QuantizationRangeError, match="quant_min .200. must not exceed"):
        FakeQuantize(quant_min=200, quant_max=100)


def test_lone_bound_is_rejected():
    with pytest.raises(QuantizationRangeError, match="both quant_min and quant_max"):
        FakeQuantize(quant_min=0)


def test_range_outside_dtype_is_rejected():
    with pytest.raises(QuantizationRangeError, match=r"outside the range \[0, 255\]"):
        FakeQuantize(quant_min=-128, quant_max=127, dtype=torch.quint8)


class _RangeIgnoringObserver(MovingAverageMinMaxObserver):
    def __init__(self, quant_min=None, quant_max=None, **kwargs):
        super().__init__(**kwargs)


def test_observer_that_ignores_the_range_is_rejected():
    with pytest.raises(QuantizationRangeError, match=r"quantizes to \[0, 255\]"):
        FakeQuantize(_RangeIgnoringObserver, quant_min=0, quant_max=15)


class _Bare(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


def test_observer_without_the_interface_is_rejected():
    with pytest.raises(TypeError, match="lacks dtype, qscheme, quant_min"):
        FakeQuantize(_Bare)


def test_channel_axis_out_of_range_names_axis_and_shape(batches):
    fq = FakeQuantize(PerChannelMinMaxObserver, dtype=torch.qint8,
                      qscheme=torch.per_channel_symmetric, ch_axis=0)
    fq(next(batches((6, 5))))
    fq.disable_observer()
    fq.ch_axis = 2
    with pytest.raises(IndexError, match=r"ch_axis=2 .* shape \(6, 5\)"):
        fq(torch.randn(6, 5))


def test_channel_count_mismatch_is_explained(batches):
    fq = FakeQuantize(PerChannelMinMaxObserver, dtype=torch.qint8,
                      qscheme=torch.per_channel_symmetric, ch_axis=0)
    fq.disable_observer()  # buffers still hold the single initial scale
    with pytest.raises(ValueError, match="holds 1 per-channel scales .* 6 channels along axis 0"):
        fq(torch.randn(6, 5))


# ---- properties ----------------------------------------------------------------------------

_finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None, database=None)
@given(
    values=st.lists(_finite, min_size=1, max_size=40),
    symmetric=st.booleans(),
)
def test_property_output_is_on_the_grid_and_matches_upstream(values, symmetric):
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    kwargs = {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8, "qscheme": qscheme}
    ours, theirs = FakeQuantize(**kwargs), tq.FakeQuantize(**kwargs)
    x = torch.tensor(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = ours(x)
        assert torch.equal(y, theirs(x))
    # every output is (q - zero_point) * scale for an integer q in [quant_min, quant_max]
    q = y / ours.scale + ours.zero_point
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert bool((q.round() >= -128).all() and (q.round() <= 127).all())
    # and the quantization error inside the range is at most half a step
    inside = (x >= -128 * ours.scale) & (x <= 127 * ours.scale)
    assert bool(((y - x).abs()[inside] <= ours.scale * 0.5001).all())
