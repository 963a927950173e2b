"""Quantized Dropout: an identity that converts like upstream's."""

from __future__ import annotations

import torch
import torch.ao.nn.quantized as up_nnq
from nn.quantized.oracle import quantize_input

import fxquant.nn.quantized as nnq


def test_dropout_is_identity_on_quantized_tensors_even_in_training():
    qx = quantize_input(torch.randn(5, 5))
    module = nnq.Dropout(0.5)
    module.train()
    assert module(qx) is qx


def test_from_float_keeps_p_and_inplace_and_repr_matches_upstream():
    float_dropout = torch.nn.Dropout(0.3, inplace=True)
    ours, theirs = nnq.Dropout.from_float(float_dropout), up_nnq.Dropout.from_float(float_dropout)
    assert (ours.p, ours.inplace) == (0.3, True)
    assert repr(ours) == repr(theirs) == "QuantizedDropout(p=0.3, inplace=True)"
    assert repr(nnq.Dropout.from_reference(float_dropout, 0.1, 0)) == repr(ours)
