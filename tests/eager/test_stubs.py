"""QuantStub / DeQuantStub / QuantWrapper behave like upstream's."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import fxquant
from fxquant.eager import DeQuantStub, QuantStub, QuantWrapper


@pytest.mark.parametrize("stub", [QuantStub, DeQuantStub], ids=["quant", "dequant"])
def test_stub_is_identity_before_convert(stub):
    x = torch.randn(3, 4)
    assert stub()(x) is x


@pytest.mark.parametrize("stub", [QuantStub, DeQuantStub], ids=["quant", "dequant"])
def test_stub_keeps_given_qconfig_only_when_set(stub):
    assert stub(fxquant.default_qconfig).qconfig is fxquant.default_qconfig
    assert not hasattr(stub(), "qconfig")
    assert not hasattr(stub(None), "qconfig")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_quant_wrapper_matches_upstream_structure(training):
    inner = nn.Linear(4, 4).train(training)
    inner.qconfig = fxquant.default_qconfig
    ours, theirs = QuantWrapper(inner), tq.QuantWrapper(inner)
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert ours.training is theirs.training is training
    assert ours.quant.qconfig is inner.qconfig and ours.dequant.qconfig is inner.qconfig
    x = torch.randn(2, 4)
    assert torch.equal(ours(x), theirs(x))
