"""Issue 7's acceptance test: on real models with real data, the layer the report ranks worst
is the one whose float fallback recovers the most accuracy — keeping it in float (re-quantizing
with KeepFloatQuantizer) improves the output SQNR more than keeping a random layer in float.

EfficientNet-Lite0 (XNNPACK symmetric per-channel config) on real photo crops at 160 px,
MiniLM-L6 (x86 default config) on real sentences cut to 24 tokens; both with plain per-channel
min/max weight observers (the default output-aware weight observer costs seconds per convert,
and each model is quantized seven times here).
"""

from __future__ import annotations

import copy
import dataclasses
import random
import statistics

import pytest
import torch

from fxquant.metrics import sqnr
from fxquant.observers import PerChannelMinMaxObserver
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.float_fallback import KeepFloatQuantizer
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.pt2e.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from fxquant.report import build_report, capture_with_debug_handles

pytestmark = pytest.mark.slow

RANDOM_PICKS = 5


def _cheap_weights(config):
    weight = dataclasses.replace(config.weight, observer_or_fake_quant_ctr=PerChannelMinMaxObserver)
    return dataclasses.replace(config, weight=weight)


def xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(_cheap_weights(get_symmetric_quantization_config(is_per_channel=True)))


def x86() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(_cheap_weights(get_default_x86_inductor_quantization_config()))


def _quantize(float_gm, quantizer, calibration):
    prepared = prepare_pt2e(copy.deepcopy(float_gm), quantizer)
    with torch.no_grad():
        for args in calibration:
            prepared(*args)
    return convert_pt2e(prepared)


def _output_sqnr(model, evaluation, reference) -> float:
    with torch.no_grad():
        out = torch.cat([model(*args) for args in evaluation])
    return sqnr(reference, out)


def _gain_of_keeping(make_quantizer, name, float_gm, calibration, evaluation, reference, baseline) -> float:
    q = _quantize(float_gm, KeepFloatQuantizer(make_quantizer(), [name]), calibration)
    return _output_sqnr(q, evaluation, reference) - baseline


def _check_ranking(make_quantizer, float_model, calibration, evaluation):
    float_gm = capture_with_debug_handles(float_model, calibration[0])
    with torch.no_grad():
        reference = torch.cat([float_model(*args) for args in evaluation])
    q = _quantize(float_gm, make_quantizer(), calibration)
    report = build_report(float_gm, q, evaluation, measure_top=8)
    baseline = _output_sqnr(q, evaluation, reference)
    assert report.model_sqnr_db == pytest.approx(baseline, abs=0.01)
    top = report.worst(1)[0]
    others = [layer.name for layer in report.layers if layer.name != top.name]
    picks = random.Random(0).sample(others, RANDOM_PICKS)
    args = (float_gm, calibration, evaluation, reference, baseline)
    top_gain = _gain_of_keeping(make_quantizer, top.name, *args)
    gains = [_gain_of_keeping(make_quantizer, n, *args) for n in picks]
    print(f"baseline {baseline:.2f} dB; keep {top.name} in float: {top_gain:+.2f} dB "
          f"(report predicted {top.recovery_db:+.2f}); random: "
          + ", ".join(f"{n} {g:+.2f}" for n, g in zip(picks, gains)))
    assert top_gain > 0
    assert top_gain >= statistics.median(gains)
    assert top_gain >= statistics.mean(gains)
    assert sum(top_gain > g for g in gains) >= RANDOM_PICKS - 1
    return report


def test_efficientnet_lite0_worst_layer_recovers_the_most():
    from fxquant.zoo import efficientnet_lite0, imagenet_photos

    torch.manual_seed(0)
    model = efficientnet_lite0().eval()
    calibration = [(imagenet_photos(8, split="calibration", size=160),)]
    evaluation = [(imagenet_photos(8, split="holdout", size=160),)]
    report = _check_ranking(xnnpack, model, calibration, evaluation)
    assert len(report.layers) > 40


def _fixed_length(tokenizer, sentences, length):
    ids, mask = tokenizer.encode(sentences, max_length=length)
    pad = length - ids.shape[1]
    return torch.nn.functional.pad(ids, (0, pad)), torch.nn.functional.pad(mask, (0, pad))


def test_minilm_worst_layer_recovers_the_most():
    from fxquant.zoo import minilm_l6, minilm_tokenizer, real_sentences

    model = minilm_l6().eval()
    tokenizer = minilm_tokenizer()
    calibration = [_fixed_length(tokenizer, real_sentences(8, split="calibration", seed=s), 24) for s in range(2)]
    evaluation = [_fixed_length(tokenizer, real_sentences(8, split="holdout"), 24)]
    report = _check_ranking(x86, model, calibration, evaluation)
    assert any(layer.op_kind == "linear" for layer in report.layers)
