"""fxquant.nn.intrinsic.quantized.dynamic.LinearReLU against upstream's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic as up_nni
import torch.ao.nn.intrinsic.quantized.dynamic as up_nniqd
import torch.ao.quantization as tq
from nn.quantized.oracle import assert_same_state_dict, save_load

import fxquant
import fxquant.nn.intrinsic as nni
import fxquant.nn.intrinsic.quantized.dynamic as nniqd
from fxquant.nn._errors import QuantizedInputError

QCONFIGS = [
    pytest.param(fxquant.default_dynamic_qconfig, tq.default_dynamic_qconfig, id="int8"),
    pytest.param(fxquant.float16_dynamic_qconfig, tq.float16_dynamic_qconfig, id="float16"),
]


def _pair(ours_qc, theirs_qc):
    linear = torch.nn.Linear(12, 8)
    ours_f = nni.LinearReLU(copy.deepcopy(linear), torch.nn.ReLU())
    theirs_f = up_nni.LinearReLU(copy.deepcopy(linear), torch.nn.ReLU())
    for fused, qconfig in ((ours_f, ours_qc), (theirs_f, theirs_qc)):
        fused.apply(lambda m, qc=qconfig: setattr(m, "qconfig", qc))
    return nniqd.LinearReLU.from_float(ours_f), up_nniqd.LinearReLU.from_float(theirs_f)


@pytest.mark.parametrize(("ours_qc", "theirs_qc"), QCONFIGS)
def test_dynamic_linear_relu_matches_upstream(ours_qc, theirs_qc):
    ours, theirs = _pair(ours_qc, theirs_qc)
    x = torch.randn(5, 12)
    out = ours(x)
    assert torch.equal(out, theirs(x))
    assert bool((out >= 0).all())
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    assert torch.equal(save_load(ours, weights_only=False)(x), out)


def test_quantized_input_is_rejected_with_dequant_hint():
    ours, _ = _pair(fxquant.default_dynamic_qconfig, tq.default_dynamic_qconfig)
    q = torch.quantize_per_tensor(torch.randn(2, 12), 0.1, 128, torch.quint8)
    with pytest.raises(QuantizedInputError, match="DeQuantStub"):
        ours(q)
