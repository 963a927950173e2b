"""Whole quantized models through torch.save / torch.load(weights_only=True)."""

from __future__ import annotations

import io

import pytest
import torch
from nn.quantized.oracle import small_quantized_model

import fxquant.nn.intrinsic.quantized as nniq
import fxquant.nn.quantized as nnq
from fxquant.nn.quantized.serialization import quantized_module_globals


def test_whole_model_loads_with_weights_only_and_the_allowlist():
    model = small_quantized_model()
    x = torch.randn(2, 3, 6, 6)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with pytest.raises(Exception, match="weights_only"):
        torch.load(buffer, weights_only=True)
    buffer.seek(0)
    with torch.serialization.safe_globals(quantized_module_globals()):
        loaded = torch.load(buffer, weights_only=True)
    assert torch.equal(loaded(x), model(x))


def test_allowlist_covers_packed_params_and_fused_modules():
    allowed = quantized_module_globals()
    for cls in (torch.ScriptObject, nnq.Linear, nnq.linear.LinearPackedParams,
                nnq.embedding_ops.EmbeddingPackedParams, nniq.ConvReLU2d, nnq.reference.Linear):
        assert cls in allowed
    assert all(isinstance(c, type) for c in allowed)
