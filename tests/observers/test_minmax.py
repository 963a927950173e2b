"""Min/max observers against upstream torch.ao.quantization (the oracle)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.ao.quantization as tq

from fxquant.observers.base import NonFiniteInputError, QuantizationWarning
from fxquant.observers.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

OURS = {
    "MinMax": MinMaxObserver,
    "MovingAverage": MovingAverageMinMaxObserver,
    "PerChannel": PerChannelMinMaxObserver,
    "MovingAveragePerChannel": MovingAveragePerChannelMinMaxObserver,
}
UPSTREAM = {
    "MinMax": tq.MinMaxObserver,
    "MovingAverage": tq.MovingAverageMinMaxObserver,
    "PerChannel": tq.PerChannelMinMaxObserver,
    "MovingAveragePerChannel": tq.MovingAveragePerChannelMinMaxObserver,
}

PER_TENSOR_CONFIGS = [
    {},
    {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric},
    {"dtype": torch.quint8, "qscheme": torch.per_tensor_symmetric},
    {"quant_min": 0, "quant_max": 127},
    {"dtype": torch.qint8, "quant_min": -127, "quant_max": 127, "qscheme": torch.per_tensor_symmetric, "eps": 2**-12},
    {"dtype": torch.qint8, "reduce_range": True},
    {"dtype": torch.quint8, "quant_min": 0, "quant_max": 15},
    {"dtype": torch.qint32},
    {"dtype": torch.int16, "qscheme": torch.per_tensor_symmetric},
    {"dtype": torch.uint16, "qscheme": torch.per_tensor_symmetric},
]
PER_CHANNEL_CONFIGS = [
    {},
    {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric},
    {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "ch_axis": 1},
    {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "quant_min": -127, "quant_max": 127},
    {"qscheme": torch.per_channel_affine_float_qparams},
    {"dtype": torch.quint4x2, "qscheme": torch.per_channel_affine_float_qparams},
    {"ch_axis": -1, "dtype": torch.qint8},
]


def _batches():
    g = torch.Generator().manual_seed(1)
    # shifting, growing and shrinking ranges, and one batch with a large outlier
    out = [torch.randn(4, 8, 5, 5, generator=g) * s + o for s, o in [(1, 0), (2, 0.5), (0.5, -1), (3, 2)]]
    out[2][0, 0, 0, 0] = 40.0
    return out


def _run(obs, batches):
    for b in batches:
        out = obs(b)
        assert out is b  # observers return their input unchanged
    return obs.calculate_qparams()


def _cases(names, configs):
    return [
        pytest.param(n, c, id=f"{n}-{'-'.join(f'{k}={v}' for k, v in c.items()) or 'default'}")
        for n in names
        for c in configs
    ]


@pytest.mark.parametrize(
    "name,config",
    _cases(["MinMax", "MovingAverage"], PER_TENSOR_CONFIGS)
    + _cases(["PerChannel", "MovingAveragePerChannel"], PER_CHANNEL_CONFIGS),
)
def test_qparams_equal_upstream(name, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, ref = OURS[name](**config), UPSTREAM[name](**config)
    batches = _batches()
    s, z = _run(ours, batches)
    rs, rz = _run(ref, batches)
    assert torch.equal(s, rs)
    assert torch.equal(z, rz) and z.dtype == rz.dtype
    assert torch.equal(ours.min_val, ref.min_val) and torch.equal(ours.max_val, ref.max_val)
    assert (ours.quant_min, ours.quant_max) == (ref.quant_min, ref.quant_max)


@pytest.mark.parametrize("name", list(OURS))
def test_state_dict_moves_both_ways_with_upstream(name):
    kw = {} if "PerChannel" not in name else {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric}
    ours, ref = OURS[name](**kw), UPSTREAM[name](**kw)
    for b in _batches():
        ref(b)
    ours.load_state_dict(ref.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.calculate_qparams(), ref.calculate_qparams()))
    fresh_ref = UPSTREAM[name](**kw)
    fresh_ref.load_state_dict(ours.state_dict())
    assert torch.equal(fresh_ref.min_val, ours.min_val)
    assert set(ours.state_dict()) == set(ref.state_dict())


def test_per_channel_loads_legacy_v2_names():
    obs = PerChannelMinMaxObserver()
    obs(torch.randn(3, 4))
    state = {"min_vals": obs.min_val.clone(), "max_vals": obs.max_val.clone(), "eps": obs.eps}
    fresh = PerChannelMinMaxObserver()
    fresh._load_from_state_dict(state, "", {"version": 2}, True, [], [], [])
    assert torch.equal(fresh.min_val, obs.min_val) and torch.equal(fresh.max_val, obs.max_val)


def test_moving_average_formula():
    obs = MovingAverageMinMaxObserver(averaging_constant=0.5)
    obs(torch.tensor([-2.0, 2.0]))
    obs(torch.tensor([0.0, 6.0]))
    # min: -2 + 0.5 * (0 - -2) = -1 ; max: 2 + 0.5 * (6 - 2) = 4
    assert obs.min_val.item() == -1.0 and obs.max_val.item() == 4.0


def test_reset_min_max_vals():
    obs, pc = MinMaxObserver(), PerChannelMinMaxObserver()
    for o in (obs, pc):
        o(torch.randn(2, 3))
        o.reset_min_max_vals()
    assert obs.min_val.item() == float("inf") and obs.max_val.item() == float("-inf")
    assert pc.min_val.numel() == 0
    pc(torch.randn(5, 2))
    assert pc.min_val.shape == (5,)


@pytest.mark.parametrize("cls", list(OURS.values()), ids=list(OURS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_batch_raises_clear_error(cls, bad):
    obs = cls()
    x = torch.randn(4, 4)
    x[1, 2] = bad
    with pytest.raises(NonFiniteInputError, match="NaN or Inf.*calibration data"):
        obs(x)


@pytest.mark.parametrize("cls", list(OURS.values()), ids=list(OURS))
def test_empty_batch_is_skipped_with_warning(cls):
    obs = cls()
    obs(torch.randn(4, 4))
    before = obs.min_val.clone()
    with pytest.warns(QuantizationWarning, match="empty tensor"):
        obs(torch.empty(0, 4))
    assert torch.equal(obs.min_val, before)


@pytest.mark.parametrize("cls", list(OURS.values()), ids=list(OURS))
def test_calculate_qparams_before_data_warns_and_gives_unit_scale(cls):
    with pytest.warns(QuantizationWarning, match="before the observer saw any data"):
        scale, zp = cls().calculate_qparams()
    assert scale.tolist() == [1.0] and zp.tolist() == [0]


def test_constant_tensor_gives_finite_scale():
    obs = MinMaxObserver()
    obs(torch.full((10,), 3.0))
    scale, zp = obs.calculate_qparams()
    assert torch.isfinite(scale).all() and scale.item() > 0 and 0 <= zp.item() <= 255


def test_configuration_errors():
    with pytest.raises(NotImplementedError, match="per_tensor_affine and per_tensor_symmetric"):
        MinMaxObserver(qscheme=torch.per_channel_affine)
    with pytest.raises(NotImplementedError, match="per_channel_affine, per_channel_symmetric"):
        PerChannelMinMaxObserver(qscheme=torch.per_tensor_affine)
    with pytest.raises(Exception, match="must include 0"):
        MinMaxObserver(quant_min=1, quant_max=10)
    with pytest.raises(Exception, match="strictly less"):
        MinMaxObserver(quant_min=10, quant_max=0)
    with pytest.raises(TypeError, match="cannot observe for dtype torch.float32"):
        MinMaxObserver(dtype=torch.float32)
    with pytest.raises(ValueError, match="both quant_min and quant_max"):
        MinMaxObserver(quant_min=0)
    with (
        pytest.raises(NotImplementedError, match="reduce_range is not supported with symmetric quint8"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        MinMaxObserver(qscheme=torch.per_tensor_symmetric, reduce_range=True)
    with pytest.raises(ValueError, match="averaging_constant"):
        MovingAverageMinMaxObserver(averaging_constant=0.0)
    with pytest.raises(NotImplementedError, match="dynamic"):
        PerChannelMinMaxObserver(is_dynamic=True)


def test_channel_axis_out_of_range_and_channel_count_change():
    obs = PerChannelMinMaxObserver(ch_axis=3)
    with pytest.raises(IndexError, match="ch_axis=3 is out of range for a tensor of shape \\(2, 3\\)"):
        obs(torch.randn(2, 3))
    obs = PerChannelMinMaxObserver()
    obs(torch.randn(4, 3))
    with pytest.raises(ValueError, match="saw 5 channels along axis 0 but earlier batches had 4"):
        obs(torch.randn(5, 3))


def test_repr_shows_range():
    obs = MinMaxObserver()
    obs(torch.tensor([-1.0, 2.0]))
    assert "min_val=-1.0" in repr(obs) and "max_val=2.0" in repr(obs)


def test_moving_average_dynamic_only_with_unit_averaging_constant():
    obs = MovingAverageMinMaxObserver(averaging_constant=1, is_dynamic=True)
    obs(torch.tensor([-1.0, 1.0]))
    obs(torch.tensor([0.0, 4.0]))
    assert (obs.min_val.item(), obs.max_val.item()) == (0.0, 4.0)  # each batch replaces the range
    with pytest.raises(NotImplementedError, match="averaging_constant=1"):
        MovingAverageMinMaxObserver(averaging_constant=0.01, is_dynamic=True)
