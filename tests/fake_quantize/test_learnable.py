"""LearnableFakeQuantize against upstream's _LearnableFakeQuantize: identical outputs and
gradients for the input, the scale and the zero point, through a static-estimate phase and
a learning phase with optimizer steps."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from torch.ao.quantization._learnable_fake_quantize import (
    _LearnableFakeQuantize as UpstreamLearnable,
)

from fxquant.fake_quantize import LearnableFakeQuantize, _LearnableFakeQuantize
from fxquant.numerics.dtypes import QuantizationRangeError
from fxquant.observers.minmax import (
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)

# (per channel?, constructor kwargs, input shape)
CONFIGS: list[tuple[bool, dict[str, Any], tuple[int, ...]]] = [
    (False, {"quant_min": 0, "quant_max": 255, "dtype": torch.quint8}, (4, 8)),
    (False, {"quant_min": 0, "quant_max": 15, "dtype": torch.quint8, "use_grad_scaling": True}, (4, 8)),
    (False, {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
                 "qscheme": torch.per_tensor_symmetric, "use_grad_scaling": True}, (3, 5)),
    (True, {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
                "qscheme": torch.per_channel_symmetric, "ch_axis": 0, "channel_len": 6}, (6, 5)),
    (True, {"quant_min": 0, "quant_max": 255, "dtype": torch.quint8,
                "qscheme": torch.per_channel_affine, "ch_axis": 1, "channel_len": 4,
                "use_grad_scaling": True}, (2, 4, 3)),
]
IDS = ["uint8-affine", "4bit-gradscale", "int8-symmetric-gradscale", "perchannel-int8-sym",
       "perchannel-uint8-affine-axis1"]


def _pair(per_channel: bool, kwargs: dict[str, Any]):
    ours_obs = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
    theirs_obs = (
        tq.MovingAveragePerChannelMinMaxObserver if per_channel else tq.MovingAverageMinMaxObserver
    )
    return LearnableFakeQuantize(ours_obs, **kwargs), UpstreamLearnable(theirs_obs, **kwargs)


def _step(ours, theirs, x: torch.Tensor, lr: float = 0.01) -> None:
    """Forward + backward on both, compare every gradient, then the same SGD step."""
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert torch.equal(y_ours, y_theirs)
    # a loss whose minimum is not at the current parameters
    ((y_ours - 0.3 * x) ** 2).sum().backward()
    ((y_theirs - 0.3 * x) ** 2).sum().backward()
    assert torch.equal(x_ours.grad, x_theirs.grad)
    for name in ("scale", "zero_point"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), f"{name} gradient differs"
            with torch.no_grad():
                a -= lr * a.grad
                b -= lr * b.grad
            a.grad = b.grad = None
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("per_channel", "kwargs", "shape"), CONFIGS, ids=IDS)
def test_static_then_learning_matches_upstream(per_channel, kwargs, shape, batches):
    ours, theirs = _pair(per_channel, kwargs)
    stream = list(batches(shape))
    for x in stream[:2]:  # the observer sets the parameters each batch
        _step(ours, theirs, x)
    ours.enable_param_learning()
    theirs.enable_param_learning()
    before = ours.scale.detach().clone()
    for x in stream[2:]:
        _step(ours, theirs, x)
    assert not torch.equal(ours.scale.detach(), before)  # the scale was actually trained
    for a, b in zip(ours.calculate_qparams(), theirs.calculate_qparams()):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize(
    ("mode", "switches"),
    [
        ("enable_param_learning", {"fake_quant": 1, "static": 0, "learning": 1, "grad": True}),
        ("enable_static_estimate", {"fake_quant": 1, "static": 1, "learning": 0, "grad": False}),
        ("enable_static_observation", {"fake_quant": 0, "static": 1, "learning": 0, "grad": False}),
    ],
    ids=["param_learning", "static_estimate", "static_observation"],
)
def test_modes_set_the_switches_like_upstream(mode, switches):
    ours, theirs = _pair(*CONFIGS[0][:2])
    returned = getattr(ours, mode)()
    assert (returned is ours) == (getattr(theirs, mode)() is theirs)
    for m in (ours, theirs):
        assert m.fake_quant_enabled.tolist() == [switches["fake_quant"]]
        assert m.static_enabled.tolist() == [switches["static"]]
        assert m.learning_enabled.tolist() == [switches["learning"]]
        assert m.scale.requires_grad is m.zero_point.requires_grad is switches["grad"]


def test_static_observation_returns_input_and_updates_parameters(batches):
    ours, _ = _pair(*CONFIGS[0][:2])
    ours.enable_static_observation()
    x = next(batches((4, 8)))
    assert torch.equal(ours(x), x)
    assert not torch.equal(ours.scale.detach(), torch.tensor([1.0]))


def test_learning_keeps_the_scale_above_eps():
    ours, theirs = _pair(*CONFIGS[0][:2])
    for m in (ours, theirs):
        m.enable_param_learning()
        with torch.no_grad():
            m.scale.fill_(-1.0)
    x = torch.randn(10)
    assert torch.equal(ours(x), theirs(x))
    assert ours.scale.item() == pytest.approx(torch.finfo(torch.float32).eps)


def test_attributes_and_state_dict_keys_match_upstream():
    ours, theirs = _pair(*CONFIGS[3][:2])
    for name in ("quant_min", "quant_max", "dtype", "qscheme", "ch_axis", "bitwidth",
                 "use_grad_scaling"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == ["scale", "zero_point"]


@pytest.mark.parametrize("direction", ["upstream_to_ours", "ours_to_upstream"])
def test_state_dict_round_trip_with_upstream(direction, batches):
    per_channel, kwargs, shape = CONFIGS[3]
    ours, theirs = _pair(per_channel, kwargs)
    for m in (ours, theirs):
        for x in batches(shape):
            m(x)
    fresh_ours, fresh_theirs = _pair(per_channel, kwargs)
    src, dst = (theirs, fresh_ours) if direction == "upstream_to_ours" else (ours, fresh_theirs)
    dst.load_state_dict(src.state_dict())
    for m in (src, dst):
        m.enable_param_learning()
    for x in batches(shape, seed=5):
        _step(dst, src, x)


def test_alias_names_the_same_class():
    assert _LearnableFakeQuantize is LearnableFakeQuantize


def test_observe_quant_params_logs_and_returns(caplog):
    ours, _ = _pair(*CONFIGS[0][:2])
    with caplog.at_level(logging.INFO, logger="fxquant.fake_quantize.learnable"):
        scale, zero_point = ours.observe_quant_params()
    assert scale.tolist() == [1.0] and zero_point.tolist() == [0.0]
    assert "scale" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"quant_min": 5, "quant_max": 5}, QuantizationRangeError, "strictly less than"),
        ({"quant_min": 0, "quant_max": 255, "channel_len": 0}, ValueError, "channel_len must be"),
        ({"quant_min": -128, "quant_max": 127, "dtype": torch.quint8}, QuantizationRangeError,
         r"outside the range \[0, 255\]"),
    ],
    ids=["empty-range", "bad-channel_len", "range-outside-dtype"],
)
def test_bad_configuration_is_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        LearnableFakeQuantize(MovingAverageMinMaxObserver, **kwargs)


def test_per_channel_length_mismatch_is_explained():
    fq = LearnableFakeQuantize(
        MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric, channel_len=3,
    )
    fq.enable_param_learning()
    with pytest.raises(ValueError, match="holds 3 per-channel scales .* 5 channels along axis 0"):
        fq(torch.randn(5, 2))
