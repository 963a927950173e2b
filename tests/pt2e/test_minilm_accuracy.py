"""MiniLM-L6 with the default X86 config is at least as accurate as torchao's (the oracle).

Real text: held-out sentences packed into 128-token sequences (all 32 of them), calibration
on other real text; mean cosine of the sentence embeddings against fp32, batch 8.
"""

from __future__ import annotations

import pytest
import torch
import torchao.quantization.pt2e.quantize_pt2e as torchao_pt2e
import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as torchao_xiq

from fxquant.metrics import mean_cosine
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.zoo import minilm_l6, minilm_tokenizer, real_sentences
from fxquant.zoo.sentences import sentence_pool

_LENGTH = 128
_BATCH = 8


@pytest.fixture(scope="module")
def minilm():
    model = minilm_l6().eval()
    tokenizer = minilm_tokenizer()
    text = real_sentences(2 * _BATCH * 12, split="calibration", seed=0)
    ids, mask = tokenizer.encode([" ".join(text[i * 12:(i + 1) * 12]) for i in range(2 * _BATCH)],
                                 max_length=_LENGTH)
    calibration = [(ids[i:i + _BATCH], mask[i:i + _BATCH]) for i in range(0, len(ids), _BATCH)]
    held_ids, held_mask = tokenizer.encode_packed(real_sentences(len(sentence_pool("holdout")), split="holdout"),
                                                  _LENGTH)
    holdout = [(held_ids[i:i + _BATCH], held_mask[i:i + _BATCH])
               for i in range(0, len(held_ids) - _BATCH + 1, _BATCH)]
    with torch.no_grad():
        reference = torch.cat([model(*b) for b in holdout])
    return model, calibration, holdout, reference


def _cosine(model, calibration, holdout, reference, quantizer, prepare, convert) -> float:
    gm = prepare(torch.export.export(model, calibration[0]).module(), quantizer)
    with torch.no_grad():
        for batch in calibration:
            gm(*batch)
        q = convert(gm)
        out = torch.cat([q(*b) for b in holdout])
    return mean_cosine(reference, out)


@pytest.mark.parametrize("is_dynamic", [False, True], ids=["static", "dynamic"])
def test_minilm_default_config_at_least_torchao(minilm, is_dynamic):
    model, calibration, holdout, reference = minilm
    assert reference.shape[0] >= 32
    ours = _cosine(model, calibration, holdout, reference,
                   X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic)),
                   prepare_pt2e, convert_pt2e)
    theirs = _cosine(model, calibration, holdout, reference,
                     torchao_xiq.X86InductorQuantizer().set_global(
                         torchao_xiq.get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic)),
                     torchao_pt2e.prepare_pt2e, torchao_pt2e.convert_pt2e)
    print(f"MiniLM-L6 {'dynamic' if is_dynamic else 'static'} b{_BATCH}: cosine ours {ours:.4f}, torchao {theirs:.4f}")
    assert ours >= theirs
