"""Quantize / DeQuantize against torch.ao.nn.quantized."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized as up_nnq
import torch.ao.quantization as tq
from nn.quantized.oracle import assert_same_qtensor, assert_same_state_dict, save_load

import fxquant
import fxquant.nn.quantized as nnq
from fxquant.nn._errors import QuantizedInputError
from fxquant.nn.quantized.utils import FromFloatError


@pytest.mark.parametrize("dtype", [torch.quint8, torch.qint8, torch.qint32])
def test_quantize_matches_upstream(dtype):
    x = torch.randn(3, 7) * 4
    ours, theirs = nnq.Quantize(0.05, 3, dtype), up_nnq.Quantize(0.05, 3, dtype)
    assert_same_qtensor(ours(x), theirs(x))
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())


def test_from_float_reads_the_stub_observer_like_upstream():
    ours_stub, theirs_stub = torch.nn.Module(), torch.nn.Module()
    ours_stub.activation_post_process = fxquant.MinMaxObserver()
    theirs_stub.activation_post_process = tq.MinMaxObserver()
    x = torch.randn(8, 3)
    ours_stub.activation_post_process(x)
    theirs_stub.activation_post_process(x)
    ours, theirs = nnq.Quantize.from_float(ours_stub), up_nnq.Quantize.from_float(theirs_stub)
    assert_same_qtensor(ours(x), theirs(x))
    fresh = nnq.Quantize(1.0, 0, torch.quint8)
    fresh.load_state_dict(save_load(theirs.state_dict(), weights_only=True))
    assert_same_qtensor(fresh(x), ours(x))


def test_from_float_without_observer_is_a_clear_error():
    with pytest.raises(FromFloatError, match="activation_post_process"):
        nnq.Quantize.from_float(torch.nn.Identity())


def test_quantize_rejects_an_already_quantized_tensor():
    q = torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.quint8)
    with pytest.raises(QuantizedInputError, match="duplicate QuantStub"):
        nnq.Quantize(0.1, 0, torch.quint8)(q)


def test_dequantize_round_trip():
    x = torch.randn(4, 4)
    q = nnq.Quantize(0.02, 128, torch.quint8)(x)
    out = nnq.DeQuantize()(q)
    assert torch.equal(out, q.dequantize())
    assert isinstance(nnq.DeQuantize.from_float(torch.nn.Identity()), nnq.DeQuantize)
    assert repr(nnq.DeQuantize()) == repr(up_nnq.DeQuantize())
