"""Real sequences: an LSTM reading scikit-learn digits row by row (8 steps of 8 pixels) keeps
its predictions through dynamic quantization (equal to upstream's) and eager static
quantization through the quantizable LSTM."""

from __future__ import annotations

import copy

import torch
import torch.ao.quantization as tq
from helpers import assert_sqnr
from torch import nn

import fxquant
import fxquant.eager as fe


def _rows(digits, split):
    return digits.images[getattr(digits, split)].squeeze(1)


def test_dynamic_lstm_matches_float_and_upstream(digits, digits_lstm, digits_eval):
    sequences = _rows(digits, "test")
    quantized = fe.quantize_dynamic(digits_lstm, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    expected = tq.quantize_dynamic(digits_lstm, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    assert type(quantized.lstm).__name__ == "LSTM" and quantized.lstm is not digits_lstm.lstm
    with torch.no_grad():
        reference, out = digits_lstm(sequences), quantized(sequences)
        assert torch.equal(out, expected(sequences))
    assert_sqnr(reference, out, min_db=25)
    inputs = digits.images.squeeze(1)
    float_accuracy = digits_eval.accuracy(digits_lstm, inputs, digits)
    quantized_accuracy = digits_eval.accuracy(quantized, inputs, digits)
    assert float_accuracy > 0.9
    assert float_accuracy - quantized_accuracy < 0.01


class StaticLSTMNet(nn.Module):
    def __init__(self, ns, lstm_net):
        super().__init__()
        self.quant = ns.QuantStub()
        self.lstm = copy.deepcopy(lstm_net.lstm)
        self.head = copy.deepcopy(lstm_net.head)
        self.dequant = ns.DeQuantStub()

    def forward(self, x):
        out, _ = self.lstm(self.quant(x))
        return self.dequant(self.head(out[:, -1]))


def _static_quantized(ns, qconfig, lstm_net, calibration):
    model = StaticLSTMNet(ns, lstm_net).eval()
    model.qconfig = qconfig
    prepared = ns.prepare(model)
    assert type(prepared.lstm).__name__ == "LSTM" and prepared.lstm is not model.lstm
    with torch.no_grad():
        prepared(calibration)
    return ns.convert(prepared)


def test_static_lstm_through_quantizable_lstm(digits, digits_lstm):
    calibration, sequences = _rows(digits, "train")[:256], _rows(digits, "test")
    ours = _static_quantized(fe, fxquant.default_qconfig, digits_lstm, calibration)
    theirs = _static_quantized(tq, tq.default_qconfig, digits_lstm, calibration)
    assert ours.lstm._get_name() == theirs.lstm._get_name() == "QuantizedLSTM"
    with torch.no_grad():
        reference = digits_lstm(sequences)
        out = ours(sequences)
        assert torch.equal(out, theirs(sequences))
    assert_sqnr(reference, out, min_db=20)
