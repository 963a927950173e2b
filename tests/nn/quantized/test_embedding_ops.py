"""Quantized Embedding / EmbeddingBag (8 and 4 bit) against torch.ao.nn.quantized."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.quantized as up_nnq
import torch.ao.quantization as tq
from nn.quantized.oracle import assert_same_qtensor, assert_same_state_dict, save_load

import fxquant
import fxquant.nn.quantized as nnq
from fxquant.nn.quantized.utils import FromFloatError

BITS = [
    pytest.param(fxquant.float_qparams_weight_only_qconfig, tq.float_qparams_weight_only_qconfig,
                 torch.quint8, id="8bit"),
    pytest.param(fxquant.float_qparams_weight_only_qconfig_4bit,
                 tq.float_qparams_weight_only_qconfig_4bit, torch.quint4x2, id="4bit"),
]


def _with_qconfig(module, qconfig):
    module = copy.deepcopy(module)
    module.qconfig = qconfig
    return module


def _indices():
    return torch.randint(0, 30, (12,)), torch.tensor([0, 3, 7])


@pytest.mark.parametrize(("ours_qc", "theirs_qc", "dtype"), BITS)
def test_embedding_bag_matches_upstream(ours_qc, theirs_qc, dtype):
    bag = torch.nn.EmbeddingBag(30, 16, mode="sum")
    ours = nnq.EmbeddingBag.from_float(_with_qconfig(bag, ours_qc))
    theirs = up_nnq.EmbeddingBag.from_float(_with_qconfig(bag, theirs_qc))
    indices, offsets = _indices()
    weights = torch.rand(12)
    assert ours.dtype == dtype
    assert_same_qtensor(ours.weight(), theirs.weight())
    assert torch.equal(ours(indices, offsets), theirs(indices, offsets))
    assert torch.equal(ours(indices, offsets, weights), theirs(indices, offsets, weights))
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())


@pytest.mark.parametrize(("ours_qc", "theirs_qc", "dtype"), BITS)
def test_embedding_bag_state_dict_loads_both_ways_and_saves(ours_qc, theirs_qc, dtype):
    bag = torch.nn.EmbeddingBag(30, 16, mode="sum")
    ours = nnq.EmbeddingBag.from_float(_with_qconfig(bag, ours_qc))
    theirs = up_nnq.EmbeddingBag.from_float(_with_qconfig(bag, theirs_qc))
    indices, offsets = _indices()
    fresh_theirs = up_nnq.EmbeddingBag(30, 16, dtype=dtype)
    fresh_theirs.load_state_dict(ours.state_dict())
    assert torch.equal(fresh_theirs(indices, offsets), theirs(indices, offsets))
    fresh_ours = nnq.EmbeddingBag(30, 16, dtype=dtype)
    fresh_ours.load_state_dict(save_load(theirs.state_dict(), weights_only=True))
    assert torch.equal(fresh_ours(indices, offsets), ours(indices, offsets))
    assert torch.equal(save_load(ours, weights_only=False)(indices, offsets), ours(indices, offsets))


def test_embedding_matches_upstream_8bit():
    emb = torch.nn.Embedding(30, 16)
    ours = nnq.Embedding.from_float(_with_qconfig(emb, fxquant.float_qparams_weight_only_qconfig))
    theirs = up_nnq.Embedding.from_float(_with_qconfig(emb, tq.float_qparams_weight_only_qconfig))
    indices, _ = _indices()
    assert torch.equal(ours(indices), theirs(indices))
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    fresh = nnq.Embedding(30, 16)
    fresh.load_state_dict(theirs.state_dict())
    assert torch.equal(fresh(indices), ours(indices))
    assert torch.equal(save_load(ours, weights_only=False)(indices), ours(indices))


def test_embedding_4bit_runs_the_4bit_kernel():
    # upstream's Embedding.from_float builds an 8-bit module around a 4-bit table, whose
    # lookups then read the packed nibbles as bytes; fxquant keeps the 4-bit dtype
    emb = torch.nn.Embedding(30, 16)
    ours = nnq.Embedding.from_float(_with_qconfig(emb, fxquant.float_qparams_weight_only_qconfig_4bit))
    indices, _ = _indices()
    assert ours.dtype == torch.quint4x2
    # one-row bags of the 4-bit bag kernel read the same packed rows (fp16 scale and bias)
    bag = nnq.EmbeddingBag(30, 16, dtype=torch.quint4x2)
    bag.set_weight(ours.weight())
    assert torch.equal(ours(indices), bag(indices, torch.arange(len(indices))))
    assert (ours(indices) - emb.weight[indices]).abs().max() < 0.3


def test_embedding_qparams_default_to_float_qparams_when_qconfig_is_none():
    emb = torch.nn.Embedding(10, 8)
    emb.qconfig = None
    ours = nnq.Embedding.from_float(emb)
    assert ours.weight().qscheme() == torch.per_channel_affine_float_qparams


def test_embedding_rejects_non_float_qparams_qconfig():
    emb = _with_qconfig(torch.nn.Embedding(10, 8), fxquant.default_qconfig)
    with pytest.raises(FromFloatError, match="float_qparams_weight_only_qconfig"):
        nnq.Embedding.from_float(emb)
    with pytest.raises(FromFloatError, match="Embedding"):
        nnq.EmbeddingBag.from_float(_with_qconfig(torch.nn.Embedding(10, 8),
                                                  fxquant.float_qparams_weight_only_qconfig))


def test_from_reference_matches_upstream():
    import torch.ao.nn.quantized.reference as up_ref
    from torch.ao.quantization.utils import get_qparam_dict

    bag = torch.nn.EmbeddingBag(30, 16, mode="sum")
    observer = tq.float_qparams_weight_only_qconfig.weight()
    observer(bag.weight)
    ref = up_ref.EmbeddingBag.from_float(bag, get_qparam_dict(observer))
    indices, offsets = _indices()
    ours, theirs = nnq.EmbeddingBag.from_reference(ref), up_nnq.EmbeddingBag.from_reference(ref)
    assert torch.equal(ours(indices, offsets), theirs(indices, offsets))
