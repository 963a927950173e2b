"""QAT ``Embedding`` and ``EmbeddingBag`` against ``torch.ao.nn.qat``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.qat as tnnqat
import torch.ao.quantization as tq
from torch import nn

import fxquant
import fxquant.nn.qat as nnqat


def _pair(float_module: nn.Module) -> tuple[nn.Module, nn.Module]:
    a, b = copy.deepcopy(float_module), copy.deepcopy(float_module)
    a.qconfig, b.qconfig = fxquant.default_embedding_qat_qconfig, tq.default_embedding_qat_qconfig
    name = type(float_module).__name__
    return getattr(nnqat, name).from_float(a), getattr(tnnqat, name).from_float(b)


def test_embedding_matches_upstream_with_gradients():
    ours, theirs = _pair(nn.Embedding(10, 6, padding_idx=0))
    ids = torch.tensor([[0, 3, 9], [4, 4, 1]])
    y_ours, y_theirs = ours(ids), theirs(ids)
    assert torch.equal(y_ours, y_theirs)
    y_ours.sum().backward()
    y_theirs.sum().backward()
    assert torch.equal(ours.weight.grad, theirs.weight.grad)
    assert repr(ours) == repr(theirs)
    assert type(ours.to_float()) is nn.Embedding
    assert torch.equal(ours.to_float().weight, ours.weight)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_matches_upstream(mode):
    ours, theirs = _pair(nn.EmbeddingBag(10, 6, mode=mode))
    ids, offsets = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9]), torch.tensor([0, 4])
    assert torch.equal(ours(ids, offsets), theirs(ids, offsets))
    back = ours.to_float()
    assert type(back) is nn.EmbeddingBag and back.mode == mode


def test_weight_observer_must_use_float_qparams():
    with pytest.raises(nnqat.QATModuleError, match="per_channel_affine_float_qparams"):
        nnqat.Embedding(10, 4, qconfig=fxquant.default_qat_qconfig)
    bag = nn.EmbeddingBag(10, 4)
    bag.qconfig = fxquant.default_qat_qconfig
    with pytest.raises(AssertionError, match="per_channel_affine_float_qparams"):
        nnqat.EmbeddingBag.from_float(bag)
