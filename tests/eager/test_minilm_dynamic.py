"""Real model: all-MiniLM-L6-v2 sentence embeddings through quantize_dynamic.

Upstream's default dynamic qconfig: fxquant's output equals upstream's (same kernels), and
loses accuracy as upstream does. fxquant's per-token qconfig keeps mean cosine >= 0.995.
"""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import fxquant.eager as fe
from fxquant.qconfig.per_token import per_token_dynamic_qconfig

minilm = pytest.importorskip("fxquant.zoo.minilm", reason="needs the MiniLM zoo module")


@pytest.fixture(scope="module")
def minilm_batches():
    """The float model, 6 batches of 8 real held-out sentences, and their float embeddings."""
    from fxquant.zoo.sentences import real_sentences

    model = minilm.minilm_l6()
    tokenizer = minilm.minilm_tokenizer()
    sentences = real_sentences(48, split="holdout")
    batches = [tokenizer.encode(sentences[i:i + 8]) for i in range(0, 48, 8)]
    return model, batches, _embed(model, batches)


def _embed(model, batches):
    with torch.no_grad():
        return torch.cat([model(ids, mask) for ids, mask in batches])


def _mean_cosine(a, b):
    return float(nn.functional.cosine_similarity(a, b, dim=1).mean())


def test_default_qconfig_equals_upstream(minilm_batches):
    model, batches, reference = minilm_batches
    ours = fe.quantize_dynamic(model)
    theirs = tq.quantize_dynamic(model)
    linears = [m for m in ours.modules() if type(m).__name__ == "Linear"]
    assert len(linears) == 36 and all(not isinstance(m, nn.Linear) for m in linears)
    out = _embed(ours, batches)
    assert torch.equal(out, _embed(theirs, batches))
    # upstream's per-tensor activations cost accuracy on this model (~0.95 mean cosine)
    assert _mean_cosine(out, reference) < 0.99


@pytest.mark.parametrize(
    "spec, dtype",
    [({nn.Linear: per_token_dynamic_qconfig}, torch.qint8),
     ({nn.Linear}, per_token_dynamic_qconfig)],
    ids=["dict", "set"],
)
def test_per_token_qconfig_keeps_cosine(minilm_batches, spec, dtype):
    model, batches, reference = minilm_batches
    quantized = fe.quantize_dynamic(model, spec, dtype=dtype)
    assert sum(type(m).__name__ == "PerTokenLinear" for m in quantized.modules()) == 36
    assert _mean_cosine(_embed(quantized, batches), reference) >= 0.995
