"""lower_to_int8 on real models and real data: the lowered models keep the PT2E floors
(tests/pt2e/test_real_models.py) and the reference model's predictions."""

from __future__ import annotations

import pytest
import torch
from pt2e_helpers import QD

from fxquant.lowering import kernels as int8_kernels
from fxquant.lowering import lower_to_int8, lowering_report
from fxquant.lowering.rules.linear import onednn_linear, onednn_linear_add
from fxquant.metrics import mean_cosine, sqnr, top1_agreement
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.zoo import (
    efficientnet_lite0,
    imagenet_photos,
    minilm_l6,
    minilm_tokenizer,
    real_sentences,
)

pytestmark = pytest.mark.slow
Q = torch.ops.quantized


def x86(is_dynamic: bool = False) -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic)
    )


def test_efficientnet_lite0_lowered_keeps_the_floor():
    model = efficientnet_lite0()
    calibration = imagenet_photos(48, split="calibration")
    holdout = imagenet_photos(128, split="holdout")
    gm = prepare_pt2e(torch.export.export(model, (calibration[:16],)).module(), x86())
    with torch.no_grad():
        for batch in calibration.split(16):
            gm(batch)
        q = convert_pt2e(gm)
        lowered = lower_to_int8(q)
        reference = torch.cat([model(b) for b in holdout.split(16)])
        qdq = torch.cat([q(b) for b in holdout[:32].split(16)])  # the slow one
        out = torch.cat([lowered(b) for b in holdout.split(16)])
    targets = [n.target for n in lowered.graph.nodes]
    # every conv runs as an int8 kernel, the residual adds fused into them
    assert not [t for t in targets if t == torch.ops.aten.conv2d.default]
    assert dict(lowering_report(lowered).applied)["conv2d_add"] == 9
    assert QD.quantize_per_tensor.default not in targets
    agreement, db = top1_agreement(reference, out), sqnr(reference, out)
    print(f"EfficientNet-Lite0 lowered: top-1 agreement {agreement:.1%}, SQNR {db:.1f} dB; "
          f"vs q/dq reference: {top1_agreement(qdq, out[:32]):.1%}, {sqnr(qdq, out[:32]):.1f} dB")
    assert agreement >= 0.90 and db >= 18.0  # the PT2E floors
    assert top1_agreement(qdq, out[:32]) >= 0.96  # the same model, only requantization rounding


@pytest.mark.parametrize("is_dynamic", [False, True], ids=["static", "dynamic"])
def test_minilm_lowered_keeps_the_cosine_floor(is_dynamic):
    model, tokenizer = minilm_l6(), minilm_tokenizer()
    calibration = [tokenizer.encode(real_sentences(8, split="calibration", seed=s)) for s in range(4)]
    ids, mask = tokenizer.encode(real_sentences(32, split="holdout"))
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=256)
    gm = torch.export.export(
        model, calibration[0], dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq})
    ).module()
    gm = prepare_pt2e(gm, x86(is_dynamic))
    with torch.no_grad():
        for inputs in calibration:
            gm(*inputs)
        q = convert_pt2e(gm)
        lowered = lower_to_int8(q)
        reference, qdq, out = model(ids, mask), q(ids, mask), lowered(ids, mask)
    int8_linears = {onednn_linear, onednn_linear_add, int8_kernels.linear, int8_kernels.linear_relu,
                    int8_kernels.linear_dynamic}
    kernels = [n.target for n in lowered.graph.nodes
               if str(n.target).startswith("quantized.") or n.target in int8_linears]
    assert len(kernels) == 36  # every linear
    assert torch.ops.aten.linear.default not in [n.target for n in lowered.graph.nodes]
    cosine = mean_cosine(reference, out)
    print(f"MiniLM-L6 {'dynamic' if is_dynamic else 'static'} lowered: cosine {cosine:.4f} "
          f"(q/dq reference {mean_cosine(reference, qdq):.4f})")
    assert cosine >= 0.99
