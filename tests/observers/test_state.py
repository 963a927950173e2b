"""Saving and restoring calibration state, interchangeable with upstream's helpers."""

from __future__ import annotations

import io

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

from fxquant.observers.minmax import MinMaxObserver, PerChannelMinMaxObserver
from fxquant.observers.state import (
    ObserverStateError,
    get_observer_state_dict,
    is_activation_post_process,
    load_observer_state_dict,
)


class Observed(nn.Module):
    def __init__(self, act=MinMaxObserver, wt=PerChannelMinMaxObserver):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.activation_post_process = act()
        self.weight_activation_post_process = wt()

    def forward(self, x):
        self.weight_activation_post_process(self.fc.weight)
        return self.activation_post_process(self.fc(x))


def _calibrated(model):
    for _ in range(3):
        model(torch.randn(5, 4) * 3)
    return model


def test_round_trip_through_torch_save():
    model = _calibrated(Observed())
    buf = io.BytesIO()
    torch.save(get_observer_state_dict(model), buf)
    state = get_observer_state_dict(model)
    assert set(state) == {
        "activation_post_process.eps", "activation_post_process.min_val",
        "activation_post_process.max_val", "weight_activation_post_process.eps",
        "weight_activation_post_process.min_val", "weight_activation_post_process.max_val",
    }
    fresh = Observed()
    buf.seek(0)
    load_observer_state_dict(fresh, torch.load(buf))
    for a, b in ((model.activation_post_process, fresh.activation_post_process),
                 (model.weight_activation_post_process, fresh.weight_activation_post_process)):
        assert all(torch.equal(x, y) for x, y in zip(a.calculate_qparams(), b.calculate_qparams()))


def test_interchangeable_with_upstream():
    ref = _calibrated(Observed(tq.MinMaxObserver, tq.PerChannelMinMaxObserver))
    ours = Observed()
    load_observer_state_dict(ours, tq.get_observer_state_dict(ref))
    assert torch.equal(ours.weight_activation_post_process.min_val,
                       ref.weight_activation_post_process.min_val)
    back = Observed(tq.MinMaxObserver, tq.PerChannelMinMaxObserver)
    tq.load_observer_state_dict(back, get_observer_state_dict(ours))
    assert torch.equal(back.activation_post_process.max_val, ours.activation_post_process.max_val)


def test_missing_and_unexpected_entries_are_named():
    state = get_observer_state_dict(_calibrated(Observed()))
    incomplete = {k: v for k, v in state.items() if not k.endswith("max_val")}
    with pytest.raises(ObserverStateError, match="missing .*max_val"):
        load_observer_state_dict(Observed(), incomplete)
    extra = dict(state)
    extra["other.activation_post_process.min_val"] = torch.tensor(0.0)
    with pytest.raises(ObserverStateError, match="match no observer"):
        load_observer_state_dict(Observed(), extra)


def test_is_activation_post_process():
    from fxquant.fake_quantize import FakeQuantize

    assert is_activation_post_process(MinMaxObserver())
    assert is_activation_post_process(FakeQuantize())
    assert not is_activation_post_process(nn.Linear(2, 2))
