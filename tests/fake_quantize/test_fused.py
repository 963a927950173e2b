"""FusedMovingAvgObsFakeQuantize against upstream: the same fused kernel on the same
observer state, so outputs, qparams, observer min/max and gradients must be identical."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.ao.quantization as tq

from fxquant.fake_quantize import FusedMovingAvgObsFakeQuantize
from fxquant.observers.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)

# (per channel?, kwargs, shape)
CONFIGS: list[tuple[bool, dict[str, Any], tuple[int, ...]]] = [
    (False, {"quant_min": 0, "quant_max": 255, "dtype": torch.quint8}, (4, 8)),
    (False, {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
                 "qscheme": torch.per_tensor_symmetric}, (4, 8)),
    (False, {"quant_min": 0, "quant_max": 127, "dtype": torch.quint8, "averaging_constant": 0.3},
     (2, 3, 5)),
    (True, {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
                "qscheme": torch.per_channel_symmetric, "ch_axis": 0}, (6, 5)),
    (True, {"quant_min": -127, "quant_max": 127, "dtype": torch.qint8,
                "qscheme": torch.per_channel_symmetric, "eps": 2**-12, "ch_axis": 0}, (2, 4, 3)),
    (True, {"quant_min": 0, "quant_max": 255, "dtype": torch.quint8,
                "qscheme": torch.per_channel_affine, "ch_axis": 0}, (5, 6)),
]
IDS = ["uint8-affine", "int8-symmetric", "uint7-avg0.3", "perchannel-int8-sym",
       "perchannel-127-3d", "perchannel-uint8-affine"]


def _pair(per_channel: bool, kwargs: dict[str, Any]):
    ours_obs = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
    theirs_obs = (
        tq.MovingAveragePerChannelMinMaxObserver if per_channel else tq.MovingAverageMinMaxObserver
    )
    return (
        FusedMovingAvgObsFakeQuantize(ours_obs, **kwargs),
        tq.FusedMovingAvgObsFakeQuantize(theirs_obs, **kwargs),
    )


@pytest.mark.parametrize(("per_channel", "kwargs", "shape"), CONFIGS, ids=IDS)
def test_matches_upstream_over_batches(per_channel, kwargs, shape, agree, batches):
    ours, theirs = _pair(per_channel, kwargs)
    assert agree(ours, theirs, batches(shape)) == 6
    for name in ("min_val", "max_val"):
        a = getattr(ours.activation_post_process, name)
        b = getattr(theirs.activation_post_process, name)
        assert torch.equal(a, b), name
    for a, b in zip(ours.calculate_qparams(), theirs.calculate_qparams()):
        assert torch.equal(a, b)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize(("per_channel", "kwargs", "shape"), [CONFIGS[0], CONFIGS[3]],
                         ids=["per-tensor", "per-channel"])
def test_switches_match_upstream(per_channel, kwargs, shape, agree, batches):
    ours, theirs = _pair(per_channel, kwargs)
    assert ours.fake_quant_enabled.dtype == ours.observer_enabled.dtype == torch.long
    stream = batches(shape)
    agree(ours, theirs, [next(stream)])
    for m in (ours, theirs):
        m.disable_observer()
    frozen = ours.scale.clone()
    agree(ours, theirs, [next(stream)])
    assert torch.equal(ours.scale, frozen)
    for m in (ours, theirs):
        m.enable_observer()
        m.disable_fake_quant()
    x = next(stream)
    assert torch.equal(ours(x), x)
    agree(ours, theirs, stream)


@pytest.mark.parametrize("direction", ["upstream_to_ours", "ours_to_upstream"])
def test_state_dict_round_trip_with_upstream(direction, agree, batches):
    per_channel, kwargs, shape = CONFIGS[3]
    ours, theirs = _pair(per_channel, kwargs)
    agree(ours, theirs, batches(shape))
    fresh_ours, fresh_theirs = _pair(per_channel, kwargs)
    src, dst = (theirs, fresh_ours) if direction == "upstream_to_ours" else (ours, fresh_theirs)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    dst.load_state_dict(src.state_dict())
    assert agree(dst, src, batches(shape, seed=3)) == 6


def test_rejects_other_observers():
    with pytest.raises(TypeError, match="MovingAverageMinMaxObserver .* got MinMaxObserver"):
        FusedMovingAvgObsFakeQuantize(MinMaxObserver)


def test_channel_axis_out_of_range_names_axis_and_shape():
    fq = FusedMovingAvgObsFakeQuantize(
        MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric, ch_axis=3,
    )
    with pytest.raises(IndexError, match=r"ch_axis=3 .* shape \(4, 5\)"):
        fq(torch.randn(4, 5))


@pytest.mark.parametrize("ch_axis", [1, -1])
def test_per_channel_off_axis_0_is_explained(ch_axis):
    # The kernel supports axis 0 only; upstream fails with the kernel's RuntimeError.
    fq = FusedMovingAvgObsFakeQuantize(
        MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric, ch_axis=ch_axis,
    )
    with pytest.raises(NotImplementedError, match=f"only along axis 0, got ch_axis={ch_axis}"):
        fq(torch.randn(4, 5))


def test_negative_channel_axis_meaning_axis_0_matches_upstream(agree, batches):
    kwargs = {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
                  "qscheme": torch.per_channel_symmetric}
    ours = FusedMovingAvgObsFakeQuantize(MovingAveragePerChannelMinMaxObserver, ch_axis=-2,
                                         **kwargs)
    theirs = tq.FusedMovingAvgObsFakeQuantize(tq.MovingAveragePerChannelMinMaxObserver,
                                              ch_axis=0, **kwargs)
    assert agree(ours, theirs, batches((4, 5))) == 6
