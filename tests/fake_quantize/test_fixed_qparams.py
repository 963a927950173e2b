"""FixedQParamsFakeQuantize against upstream: fixed parameters, shared with the observer."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq

from fxquant.fake_quantize import FixedQParamsFakeQuantize
from fxquant.observers.minmax import MovingAverageMinMaxObserver
from fxquant.observers.misc import FixedQParamsObserver

# (scale, zero_point, dtype, quant_min, quant_max)
PARAMS = [
    (1.0 / 256.0, 0, torch.quint8, 0, 255),
    (2.0 / 256.0, 128, torch.quint8, 0, 255),
    (1.0 / 128.0, 0, torch.qint8, -128, 127),
    (0.1, 3, torch.quint8, 0, 15),
]
IDS = ["sigmoid-0to1", "tanh-neg1to1", "int8-symmetric", "4bit"]


def _pair(scale, zero_point, dtype, qmin, qmax):
    kwargs = {"scale": scale, "zero_point": zero_point, "dtype": dtype, "quant_min": qmin, "quant_max": qmax}
    return (
        FixedQParamsFakeQuantize(FixedQParamsObserver.with_args(**kwargs)),
        tq.FixedQParamsFakeQuantize(tq.FixedQParamsObserver.with_args(**kwargs)),
    )


@pytest.mark.parametrize("params", PARAMS, ids=IDS)
def test_matches_upstream_and_never_moves(params, agree, batches):
    ours, theirs = _pair(*params)
    initial = ours.scale.clone(), ours.zero_point.clone()
    assert agree(ours, theirs, batches((3, 7))) == 6
    assert torch.equal(ours.scale, initial[0]) and torch.equal(ours.zero_point, initial[1])
    assert ours.scale.tolist() == [pytest.approx(params[0])]
    assert ours.zero_point.tolist() == [params[1]]
    assert repr(ours) == repr(theirs)


def test_qparams_are_the_observers_buffers():
    ours, _ = _pair(*PARAMS[0])
    assert ours.scale is ours.activation_post_process.scale
    assert ours.zero_point is ours.activation_post_process.zero_point
    scale, zero_point = ours.calculate_qparams()
    assert scale is ours.scale and zero_point is ours.zero_point


@pytest.mark.parametrize("direction", ["upstream_to_ours", "ours_to_upstream"])
def test_state_dict_round_trip_with_upstream(direction):
    ours, theirs = _pair(*PARAMS[1])
    other_ours, other_theirs = _pair(*PARAMS[0])
    src, dst = (theirs, other_ours) if direction == "upstream_to_ours" else (ours, other_theirs)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    dst.load_state_dict(src.state_dict())
    assert torch.equal(dst.scale, src.scale) and torch.equal(dst.zero_point, src.zero_point)
    assert torch.equal(dst.activation_post_process.scale, src.scale)
    x = torch.linspace(-2, 2, 50)
    assert torch.equal(dst(x), src(x))


def test_rejects_a_measuring_observer():
    with pytest.raises(TypeError, match="needs a FixedQParamsObserver .* MovingAverageMinMax"):
        FixedQParamsFakeQuantize(MovingAverageMinMaxObserver)


def test_rejects_per_channel_qscheme():
    ctor = FixedQParamsObserver.with_args(
        scale=0.1, zero_point=0, qscheme=torch.per_channel_affine
    )
    with pytest.raises(ValueError, match="per-tensor quantization only"):
        FixedQParamsFakeQuantize(ctor)
