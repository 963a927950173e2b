"""``PerTokenLinear``: accuracy against float on realistic activations, exactness against the
dequantized reference, odd shapes, state dicts, conversion paths and errors."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import assert_sqnr, sqnr_db
from torch import nn

import fxquant
import fxquant.nn.quantized.dynamic as nnqd
from fxquant.nn._errors import QuantizedInputError
from fxquant.qconfig.per_token import per_token_dynamic_qconfig, per_token_symmetric_dynamic_qconfig

QCONFIGS = {
    "asymmetric": per_token_dynamic_qconfig,
    "symmetric": per_token_symmetric_dynamic_qconfig,
}


def _linear(k: int, n: int, bias: bool = True, qconfig_name: str = "asymmetric") -> nn.Linear:
    lin = nn.Linear(k, n, bias=bias)
    lin.qconfig = QCONFIGS[qconfig_name]
    return lin


def _transformer_like(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """LayerNorm-like activations with a few outlier channels and one loud token."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    x[..., 3 % shape[-1]] *= 10.0
    x[..., 17 % shape[-1]] *= 5.0
    x.view(-1, shape[-1])[0] *= 8.0
    return x


@pytest.mark.parametrize("qconfig_name,min_db", [("asymmetric", 35), ("symmetric", 32)])
def test_sqnr_on_activations_with_outliers(qconfig_name, min_db):
    float_linear = _linear(384, 1536, qconfig_name=qconfig_name)
    qlinear = nnqd.PerTokenLinear.from_float(float_linear)
    x = _transformer_like((8, 32, 384))
    with torch.no_grad():
        ref = float_linear(x)
    out = qlinear(x)
    assert_sqnr(ref, out, min_db=min_db)
    # a per-tensor activation scale (upstream's dynamic Linear) is far worse here
    float_linear.qconfig = fxquant.default_dynamic_qconfig
    per_tensor = nnqd.Linear.from_float(float_linear)(x)
    assert sqnr_db(ref, out) > sqnr_db(ref, per_tensor) + 15


@pytest.mark.parametrize("qconfig_name", list(QCONFIGS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(
    "shape,k,n",
    [((1, 8), 8, 8), ((3, 5), 5, 7), ((2, 3, 9), 9, 10), ((17, 384), 384, 384), ((0, 6), 6, 4)],
    ids=["1_token", "odd_k_n", "3d_input", "minilm_qkv", "empty"],
)
def test_equals_dequantized_reference(shape, k, n, bias, qconfig_name):
    qlinear = nnqd.PerTokenLinear.from_float(_linear(k, n, bias, qconfig_name))
    x = _transformer_like(shape) if shape[0] else torch.randn(shape)
    out = qlinear(x)
    assert out.shape == (*shape[:-1], n)
    w = qlinear.weight().dequantize()
    b = qlinear.bias()
    xq = torch.ops.quantized_decomposed  # reference token quantization below
    x2d = x.reshape(-1, k)
    if qlinear.symmetric_activations:
        scale, zero_point = xq.choose_qparams_per_token(x2d, torch.int8)
        x_hat = xq.dequantize_per_token(
            xq.quantize_per_token(x2d, scale, zero_point, -128, 127, torch.int8),
            scale, zero_point, -128, 127, torch.int8, torch.float32,
        )  # fmt: skip
    else:
        x_hat = _asymmetric_reference(x2d)
    ref = (x_hat.double() @ w.double().T + (0 if b is None else b.double())).reshape(out.shape)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def _asymmetric_reference(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(1, keepdim=True).clamp(max=0)
    hi = x.amax(1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=1e-5)
    zero_point = torch.clamp(torch.round(-128 - lo / scale), -128, 127)
    q = torch.clamp(torch.round(x * (1 / scale)) + zero_point, -128, 127)
    return (q - zero_point) * scale


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_returns_its_dtype(dtype):
    qlinear = nnqd.PerTokenLinear.from_float(_linear(16, 8))
    x = torch.randn(4, 16)
    out = qlinear(x.to(dtype))
    assert out.dtype == dtype
    assert_sqnr(qlinear(x), out.float(), min_db=30)


def test_non_contiguous_input():
    qlinear = nnqd.PerTokenLinear.from_float(_linear(16, 8))
    x = torch.randn(16, 6).T  # (6, 16), transposed view
    assert torch.equal(qlinear(x), qlinear(x.contiguous()))


def test_weights_are_per_channel_symmetric_int8():
    float_linear = _linear(32, 8)
    qlinear = nnqd.PerTokenLinear.from_float(float_linear)
    qweight = qlinear.weight()
    assert qweight.qscheme() == torch.per_channel_affine  # torch's tag for per-channel tensors
    assert bool((qweight.q_per_channel_zero_points() == 0).all())
    observer = fxquant.default_per_channel_weight_observer()
    observer(float_linear.weight)
    scale, _ = observer.calculate_qparams()
    assert torch.equal(qlinear.weight_scale, scale.float())
    assert_sqnr(float_linear.weight.detach(), qweight.dequantize(), min_db=38)


def test_state_dict_round_trip_with_weights_only_load():
    qlinear = nnqd.PerTokenLinear.from_float(_linear(24, 12, qconfig_name="symmetric"))
    buffer = io.BytesIO()
    torch.save(qlinear.state_dict(), buffer)
    buffer.seek(0)
    fresh = nnqd.PerTokenLinear(24, 12)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.symmetric_activations
    assert torch.equal(fresh.weight_row_sum, qlinear.weight_row_sum)
    x = torch.randn(5, 24)
    assert torch.equal(fresh(x), qlinear(x))


def test_torch_save_whole_model(tmp_path):
    model = nn.Sequential(nnqd.PerTokenLinear.from_float(_linear(24, 12)), nn.GELU())
    x = torch.randn(5, 24)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert torch.equal(loaded(x), model(x))
    assert "per-token asymmetric int8" in repr(loaded)


def test_set_weight_bias_takes_upstream_style_qint8_weights():
    w = torch.randn(6, 10)
    scales = w.abs().amax(1) / 127
    qw = torch.quantize_per_channel(
        w, scales.double(), torch.zeros(6, dtype=torch.long), 0, torch.qint8
    )
    qlinear = nnqd.PerTokenLinear(10, 6)
    qlinear.set_weight_bias(qw, None)
    assert torch.equal(qlinear.weight().int_repr(), qw.int_repr())
    qt = torch.quantize_per_tensor(w, 0.02, 0, torch.qint8)
    qlinear.set_weight_bias(qt, torch.zeros(6))
    assert torch.equal(qlinear.weight_scale, torch.full((6,), 0.02))
    with pytest.raises(nnqd.PerTokenLinearError, match="symmetric weights"):
        qlinear.set_weight_bias(torch.quantize_per_tensor(w, 0.02, 3, torch.qint8), None)


def test_from_reference():
    import torch.ao.nn.quantized.reference as tnnqr

    w = torch.randn(6, 10)
    scales = (w.abs().amax(1) / 127).double()
    ref = tnnqr.Linear.from_float(
        nn.Linear(10, 6),
        {"qscheme": torch.per_channel_affine, "dtype": torch.qint8, "scale": scales,
         "zero_point": torch.zeros(6, dtype=torch.long), "axis": 0},
    )  # fmt: skip
    qlinear = nnqd.PerTokenLinear.from_reference(ref)
    assert torch.equal(qlinear.weight().int_repr(), ref.get_quantized_weight().int_repr())


def test_errors_name_the_module_and_the_fix():
    qlinear = nnqd.PerTokenLinear.from_float(_linear(8, 4))
    with pytest.raises(QuantizedInputError, match="DynamicQuantizedPerTokenLinear"):
        qlinear(torch.quantize_per_tensor(torch.randn(2, 8), 0.1, 128, torch.quint8))
    with pytest.raises(RuntimeError, match="expected in_features=8"):
        qlinear(torch.randn(2, 9))
    affine = _linear(8, 4)
    affine.qconfig = fxquant.QConfig(
        activation=per_token_dynamic_qconfig.activation,
        weight=fxquant.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_affine),
    )  # fmt: skip
    with pytest.raises(nnqd.PerTokenLinearError, match="symmetric torch.qint8 weight observer"):
        nnqd.PerTokenLinear.from_float(affine)
    conv = nn.Conv1d(1, 1, 1)
    with pytest.raises(nnqd.PerTokenLinearError, match="converts Linear"):
        nnqd.PerTokenLinear.from_float(conv)


def test_without_qconfig_uses_the_default_mapping():
    qlinear = nnqd.PerTokenLinear.from_float(nn.Linear(8, 4))
    assert not qlinear.symmetric_activations
    qat = fxquant.nn.qat.dynamic.Linear(8, 4, qconfig=fxquant.default_dynamic_qat_qconfig)
    assert isinstance(nnqd.PerTokenLinear.from_float(qat), nnqd.PerTokenLinear)


def test_precomputed_qat_weight_qparams_are_reused():
    qconfig = fxquant.QConfig(
        activation=fxquant.default_dynamic_fake_quant,
        weight=fxquant.default_per_channel_weight_fake_quant,
    )
    qat = fxquant.nn.qat.dynamic.Linear(8, 4, qconfig=qconfig)
    qat(torch.randn(3, 8))  # the weight fake-quantizer observes the weight
    with torch.no_grad():
        qat.weight.mul_(2.0)  # qparams now stale: the QAT ones must still be used
    qlinear = nnqd.PerTokenLinear.from_float(qat, use_precomputed_fake_quant=True)
    scale, _ = qat.weight_fake_quant.calculate_qparams()
    assert torch.equal(qlinear.weight_scale, scale.float())
