"""The PT2E flow end to end on real models and real data (issue 3's acceptance floors).

EfficientNet-Lite0 (real ImageNet weights) is calibrated on 48 real photo crops and compared
with the float model on 128 held-out crops; MiniLM-L6 (real weights) on real sentences.
"""

from __future__ import annotations

import pytest
import torch

from fxquant.metrics import mean_cosine, sqnr, top1_agreement
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.pt2e.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from fxquant.zoo import (
    efficientnet_lite0,
    imagenet_photos,
    minilm_l6,
    minilm_tokenizer,
    real_sentences,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    model = efficientnet_lite0()
    calibration = imagenet_photos(48, split="calibration")
    holdout = imagenet_photos(128, split="holdout")
    with torch.no_grad():
        reference = model(holdout)
    return model, calibration, holdout, reference


def _quantize(model, example, quantizer, batches):
    gm = torch.export.export(model, (example,)).module()
    gm = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for batch in batches:
            gm(batch)
    return convert_pt2e(gm)


def _run(model, data, batch_size=16):
    with torch.no_grad():
        return torch.cat([model(b) for b in data.split(batch_size)])


def test_efficientnet_lite0_x86_default_meets_the_floor(lite0):
    model, calibration, holdout, reference = lite0
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    q = _quantize(model, calibration[:16], quantizer, calibration.split(16))
    out = _run(q, holdout)
    agreement, db = top1_agreement(reference, out), sqnr(reference, out)
    print(f"EfficientNet-Lite0 X86 default: top-1 agreement {agreement:.1%}, logits SQNR {db:.1f} dB")
    # issue 3: >= 90% and >= 18 dB (torchao 0.18: 84% / 15.6 dB; upstream FX x86: 32% / 1.2 dB);
    # measured here: 96.9% / 20.6 dB
    assert agreement >= 0.90
    assert db >= 18.0


def test_efficientnet_lite0_xnnpack_per_channel(lite0):
    model, calibration, holdout, reference = lite0
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    q = _quantize(model, calibration[:16], quantizer, calibration.split(16))
    out = _run(q, holdout)
    agreement, db = top1_agreement(reference, out), sqnr(reference, out)
    print(f"EfficientNet-Lite0 XNNPACK per-channel: top-1 agreement {agreement:.1%}, SQNR {db:.1f} dB")
    # torchao 0.18's XNNPACKQuantizer reaches 52% on this data; measured here: 88.3% / 17.4 dB
    assert agreement >= 0.85
    assert db >= 16.0


@pytest.fixture(scope="module")
def minilm():
    model = minilm_l6()
    tokenizer = minilm_tokenizer()
    calibration = [tokenizer.encode(real_sentences(8, split="calibration", seed=s)) for s in range(4)]
    holdout = tokenizer.encode(real_sentences(32, split="holdout"))
    with torch.no_grad():
        reference = model(*holdout)
    return model, calibration, holdout, reference


@pytest.mark.parametrize("is_dynamic", [False, True], ids=["static", "dynamic"])
def test_minilm_linear_quantization(minilm, is_dynamic):
    model, calibration, holdout, reference = minilm
    ids, mask = holdout
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=256)
    gm = torch.export.export(
        model, calibration[0], dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq})
    ).module()
    quantizer = X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic)
    )
    gm = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for batch_inputs in calibration:
            gm(*batch_inputs)
    q = convert_pt2e(gm)
    with torch.no_grad():
        out = q(ids, mask)
    cosine = mean_cosine(reference, out)
    print(f"MiniLM-L6 X86 {'dynamic' if is_dynamic else 'static'}: mean embedding cosine {cosine:.4f}")
    # measured: 0.9944 static, 0.9932 dynamic
    assert cosine >= 0.99
