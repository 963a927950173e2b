"""Quantizable LSTM against ``torch.ao.nn.quantizable.LSTM`` (same structure, state-dict
keys and float outputs) and the eager flow float -> observed -> quantized against upstream's
(bit-exact on the quantized kernels)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.quantizable as tnnqa
import torch.ao.nn.quantized as tnnq
import torch.ao.quantization as tq
from torch import nn

import fxquant
import fxquant.nn.quantizable as nnqa
from fxquant.nn.quantizable.quantized_lstm import LSTM as QuantizedLSTM

LAYOUTS = {
    "1_layer": {},
    "2_layers": {"num_layers": 2},
    "bidirectional": {"bidirectional": True},
    "batch_first": {"batch_first": True},
    "split_gates": {"split_gates": True},
}


def _input(batch_first: bool = False) -> torch.Tensor:
    return torch.randn(3, 6, 8) if batch_first else torch.randn(6, 3, 8)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_structure_state_dict_and_float_outputs_match_upstream(layout):
    kwargs = LAYOUTS[layout]
    ours = nnqa.LSTM(8, 12, **kwargs)
    theirs = tnnqa.LSTM(8, 12, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = _input(kwargs.get("batch_first", False))
    y_ours, (h_ours, c_ours) = ours(x)
    y_theirs, (h_theirs, c_theirs) = theirs(x)
    assert torch.equal(y_ours, y_theirs)
    assert torch.equal(h_ours, h_theirs) and torch.equal(c_ours, c_theirs)
    assert repr(ours) == repr(theirs)


def test_fresh_bidirectional_multi_layer_lstm_runs():
    # upstream builds layer 2 with hidden_size inputs instead of 2 * hidden_size and fails
    lstm = nnqa.LSTM(8, 12, num_layers=2, bidirectional=True)
    y, (h, c) = lstm(_input())
    assert y.shape == (6, 3, 24) and h.shape == c.shape == (4, 3, 12)


@pytest.mark.parametrize("split_gates", [False, True], ids=["fused_gates", "split_gates"])
def test_cell_from_float_computes_the_float_cell(split_gates):
    float_cell = nn.LSTMCell(8, 12)
    float_cell.qconfig = fxquant.default_qconfig
    cell = nnqa.LSTMCell.from_float(float_cell, split_gates=split_gates)
    x, hx = torch.randn(4, 8), (torch.randn(4, 12), torch.randn(4, 12))
    for got, want in zip(cell(x, hx), float_cell(x, hx)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert cell.igates.qconfig is fxquant.default_qconfig


# quantized cat/stack of the two directions requantizes to one scale (upstream warns alike)
@pytest.mark.filterwarnings("ignore:All inputs of this cat operator")
def test_from_float_gives_observed_lstm_matching_upstream_and_float():
    float_lstm = nn.LSTM(8, 12, num_layers=2, bidirectional=True).eval()
    a, b = copy.deepcopy(float_lstm), copy.deepcopy(float_lstm)
    # min-max activation observers: the same ranges as upstream's, hence the same qparams
    # (fxquant's HistogramObserver deliberately picks its own, better ranges)
    a.qconfig, b.qconfig = fxquant.default_per_channel_qconfig, tq.default_per_channel_qconfig
    ours, theirs = nnqa.LSTM.from_float(a), tnnqa.LSTM.from_float(b)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for _ in range(3):
        x = _input()
        y_ours, y_theirs = ours(x), theirs(x)
        assert torch.equal(y_ours[0], y_theirs[0])
    torch.testing.assert_close(y_ours[0], float_lstm(x)[0], rtol=1e-4, atol=1e-5)
    observers_ours = [m for n, m in ours.named_modules() if n.endswith("activation_post_process")]
    observers_theirs = [
        m for n, m in theirs.named_modules() if n.endswith("activation_post_process")
    ]
    assert len(observers_ours) == len(observers_theirs) > 0
    for o, t in zip(observers_ours, observers_theirs):
        assert torch.equal(o.min_val, t.min_val) and torch.equal(o.max_val, t.max_val)

    quantized_ours = QuantizedLSTM.from_observed(ours)
    quantized_theirs = tnnq.LSTM.from_observed(theirs)
    assert type(quantized_ours).__name__ == "LSTM" and "QuantizedLSTM" in repr(quantized_ours)
    xq = torch.quantize_per_tensor(_input(), 0.05, 128, torch.quint8)
    out_ours, (h_ours, c_ours) = quantized_ours(xq)
    out_theirs, (h_theirs, c_theirs) = quantized_theirs(xq)
    assert torch.equal(out_ours.int_repr(), out_theirs.int_repr())
    assert out_ours.q_scale() == out_theirs.q_scale()
    assert torch.equal(h_ours.int_repr(), h_theirs.int_repr())
    assert torch.equal(c_ours.int_repr(), c_theirs.int_repr())


def test_errors_name_the_problem():
    with pytest.raises(nnqa.QuantizableModuleError, match="converts nn.LSTM, got GRU"):
        nnqa.LSTM.from_float(nn.GRU(4, 4))
    with pytest.raises(AssertionError, match="has no qconfig"):
        nnqa.LSTM.from_float(nn.LSTM(4, 4))
    with pytest.raises(NotImplementedError, match="from_observed"):
        nnqa.LSTM.from_observed(nnqa.LSTM(4, 4))
    with pytest.raises(NotImplementedError, match="observed quantizable LSTM"):
        QuantizedLSTM.from_float(nn.LSTM(4, 4))
    with pytest.raises(ValueError, match="dropout"):
        nnqa.LSTM(4, 4, dropout=1.5)
    with pytest.warns(UserWarning, match="dropout option for quantizable LSTM is ignored"):
        nnqa.LSTM(4, 4, num_layers=2, dropout=0.2)
    with pytest.raises(nnqa.QuantizableModuleError, match="both be None"):
        nnqa.LSTMCell.from_params(torch.randn(8, 2), torch.randn(8, 2), torch.randn(8), None)
