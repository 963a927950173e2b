"""GreedyHistogramObserver: upstream's range search on our histogram statistics."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
import torch.nn.functional as F

from fxquant.observers import HistogramObserver
from fxquant.observers.greedy_histogram import GreedyHistogramObserver


def _batches(kind: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for scale in (1.0, 2.0, 3.0):  # the range widens: the histogram is re-binned
        x = torch.randn(40, 100, generator=gen) * scale
        if kind == "outlier_features":  # a few features large on every row, as after a LayerNorm
            x[:, :3] *= 15
        elif kind == "gelu":
            x = F.gelu(x)
        elif kind == "sparse_spikes":
            x.view(-1)[::97] *= 20
        out.append(x)
    return out


_KINDS = ["gaussian", "outlier_features", "gelu", "sparse_spikes"]
_RANGES = [("quint8", torch.quint8, 0, 255), ("reduce_range", torch.quint8, 0, 127), ("qint8", torch.qint8, -128, 127)]


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("name,dtype,qmin,qmax", _RANGES, ids=[r[0] for r in _RANGES])
def test_qparams_equal_upstream(kind, name, dtype, qmin, qmax):
    ours = GreedyHistogramObserver(dtype=dtype, quant_min=qmin, quant_max=qmax)
    upstream = tq.HistogramObserver(dtype=dtype, quant_min=qmin, quant_max=qmax)
    for x in _batches(kind):  # 4000 elements: histogrammed exactly, as upstream does
        ours(x)
        upstream(x)
    scale, zero_point = ours.calculate_qparams()
    expected_scale, expected_zero_point = upstream.calculate_qparams()
    assert torch.equal(scale, expected_scale)
    assert torch.equal(zero_point, expected_zero_point)


def test_keeps_outlier_features_the_exact_search_trims():
    greedy = GreedyHistogramObserver(dtype=torch.quint8, quant_min=0, quant_max=255)
    exact = HistogramObserver(dtype=torch.quint8, quant_min=0, quant_max=255)
    for x in _batches("outlier_features"):
        greedy(x)
        exact(x)
    full = float(greedy.max_val - greedy.min_val)
    greedy_span = float(greedy.calculate_qparams()[0]) * 255
    exact_span = float(exact.calculate_qparams()[0]) * 255
    assert greedy_span >= 0.95 * full
    assert exact_span < greedy_span


def test_loads_histogram_observer_state():
    exact = HistogramObserver(dtype=torch.quint8, quant_min=0, quant_max=255)
    for x in _batches("gelu"):
        exact(x)
    greedy = GreedyHistogramObserver(dtype=torch.quint8, quant_min=0, quant_max=255)
    greedy.load_state_dict(exact.state_dict())
    upstream = tq.HistogramObserver(dtype=torch.quint8, quant_min=0, quant_max=255)
    upstream.load_state_dict(exact.state_dict())
    assert torch.equal(greedy.calculate_qparams()[0], upstream.calculate_qparams()[0])


def test_constant_and_empty_inputs_match_the_exact_observer():
    greedy = GreedyHistogramObserver()
    exact = HistogramObserver()
    with pytest.warns(UserWarning):
        assert greedy.calculate_qparams() == exact.calculate_qparams()
    greedy(torch.full((10,), 2.5))
    exact(torch.full((10,), 2.5))
    assert greedy.calculate_qparams() == exact.calculate_qparams()


def test_histogram_of_the_wrong_size_is_an_error():
    greedy = GreedyHistogramObserver(bins=64)
    greedy(torch.randn(100))
    greedy.histogram = torch.ones(32)
    with pytest.raises(ValueError, match="bins"):
        greedy.calculate_qparams()
