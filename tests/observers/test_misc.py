"""Observers without ranges, compared with upstream."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq

from fxquant.observers.misc import (
    FixedQParamsObserver,
    NoopObserver,
    ObserverUsageError,
    PlaceholderObserver,
    RecordingObserver,
    ReuseInputObserver,
)


def test_fixed_qparams_match_upstream():
    ours = FixedQParamsObserver(scale=2.0 / 256, zero_point=128)
    ref = tq.FixedQParamsObserver(scale=2.0 / 256, zero_point=128)
    x = torch.randn(10)
    assert ours(x) is x
    for a, b in zip(ours.calculate_qparams(), ref.calculate_qparams()):
        assert torch.equal(a, b) and a.dtype == b.dtype
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert (ours.quant_min, ours.quant_max, ours.dtype, ours.qscheme) == (
        ref.quant_min, ref.quant_max, ref.dtype, ref.qscheme)


def test_fixed_qparams_rejects_bad_values():
    with pytest.raises(ValueError, match="scale must be positive"):
        FixedQParamsObserver(scale=0.0, zero_point=0)
    with pytest.raises(ValueError, match="zero_point 300 is outside"):
        FixedQParamsObserver(scale=1.0, zero_point=300)
    with pytest.raises(NotImplementedError, match="dynamic"):
        FixedQParamsObserver(scale=1.0, zero_point=0, is_dynamic=True)


def test_placeholder_carries_configuration():
    kw = {"dtype": torch.quint8, "quant_min": 0, "quant_max": 255, "is_dynamic": True}
    ours, ref = PlaceholderObserver(**kw), tq.PlaceholderObserver(**kw)
    for attr in ("dtype", "quant_min", "quant_max", "is_dynamic", "qscheme", "eps"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert repr(ours) == repr(ref).replace("torch.ao.quantization.observer.", "")
    x = torch.randn(3)
    assert ours(x) is x
    with pytest.raises(ObserverUsageError, match="PlaceholderObserver"):
        ours.calculate_qparams()


def test_placeholder_compute_dtype_means_dynamic():
    with pytest.warns(DeprecationWarning, match="is_dynamic=True"):
        obs = PlaceholderObserver(dtype=torch.quint8, compute_dtype=torch.quint8)
    assert obs.is_dynamic


def test_recording_observer_keeps_copies():
    obs = RecordingObserver()
    a, b = torch.randn(2), torch.randn(3)
    obs(a)
    obs(b)
    a.add_(1.0)  # the recorder holds copies, not references
    vals = obs.get_tensor_value()
    assert len(vals) == 2 and not torch.equal(vals[0], a) and torch.equal(vals[1], b)
    with pytest.raises(ObserverUsageError, match="get_tensor_value"):
        obs.calculate_qparams()


@pytest.mark.parametrize("cls,dtype", [(NoopObserver, torch.float16), (ReuseInputObserver, torch.quint8)])
def test_noop_and_reuse_input(cls, dtype):
    obs = cls()
    x = torch.randn(4)
    assert obs(x) is x and obs.dtype == dtype and not obs.is_dynamic
    with pytest.raises(ObserverUsageError):
        obs.calculate_qparams()
