"""fxquant.nn.quantized.functional against torch.ao.nn.quantized.functional (bit-exact)."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized.functional as up_qF
from nn.quantized.oracle import assert_same_qtensor, quantize_input

import fxquant.nn.quantized.functional as qF
from fxquant.nn._errors import QuantizedInputError
from fxquant.nn.quantized.conv import prepack_conv

X4 = torch.randn(2, 3, 8, 8) * 2
X5 = torch.randn(1, 3, 4, 6, 6)

# (id, function name, args after the input, input)
CASES = [
    ("avg_pool2d", "avg_pool2d", (3, 2, 1), X4),
    ("avg_pool3d", "avg_pool3d", (2,), X5),
    ("adaptive_avg_pool2d", "adaptive_avg_pool2d", ((3, 3),), X4),
    ("adaptive_avg_pool3d", "adaptive_avg_pool3d", ((2, 2, 2),), X5),
    ("max_pool1d", "max_pool1d", (2,), X4[0]),
    ("max_pool2d", "max_pool2d", (3, 2, 1), X4),
    ("interpolate_nearest", "interpolate", (None, 2.0), X4),
    ("interpolate_bilinear", "interpolate", ((11, 13), None, "bilinear", False), X4),
    ("hardtanh", "hardtanh", (-0.5, 0.7), X4),
    ("hardsigmoid", "hardsigmoid", (), X4),
    ("clamp", "clamp", (-1.0, 0.5), X4),
    ("threshold", "threshold", (0.2, -1.0), X4),
    ("leaky_relu", "leaky_relu", (0.1,), X4),
    ("leaky_relu_requantized", "leaky_relu", (0.1, False, 0.03, 40), X4),
    ("elu", "elu", (0.04, 60, 0.5), X4),
    ("celu", "celu", (0.04, 60, 0.5), X4),
    ("hardswish", "hardswish", (0.04, 30), X4),
]


@pytest.mark.parametrize(("name", "args", "x"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_upstream(name, args, x):
    qx = quantize_input(x)
    assert_same_qtensor(getattr(qF, name)(qx, *args), getattr(up_qF, name)(qx, *args))


WEIGHTED = [
    ("linear", "linear", (6, 8), (4, 8), {"scale": 0.1, "zero_point": 3}),
    ("conv1d", "conv1d", (5, 3, 3), (2, 3, 9), {"stride": 2, "padding": 1, "scale": 0.1, "zero_point": 3}),
    ("conv2d", "conv2d", (5, 3, 3, 3), (2, 3, 7, 7), {"padding": 1, "dilation": 2, "scale": 0.1,
                                                      "zero_point": 3}),
    ("conv3d", "conv3d", (5, 3, 2, 2, 2), (1, 3, 4, 4, 4), {"scale": 0.1, "zero_point": 3}),
]


@pytest.mark.parametrize(("name", "w_shape", "x_shape", "kwargs"), [w[1:] for w in WEIGHTED],
                         ids=[w[0] for w in WEIGHTED])
def test_weighted_ops_match_upstream(name, w_shape, x_shape, kwargs):
    weight = torch.quantize_per_tensor(torch.randn(w_shape) * 0.3, 0.01, 0, torch.qint8)
    bias = torch.randn(w_shape[0])
    qx = quantize_input(torch.randn(x_shape))
    assert_same_qtensor(getattr(qF, name)(qx, weight, bias, **kwargs),
                        getattr(up_qF, name)(qx, weight, bias, **kwargs))


def test_deprecated_upsample_aliases_warn_and_match():
    qx = quantize_input(X4)
    with pytest.warns(FutureWarning, match="interpolate"):
        out = qF.upsample_bilinear(qx, scale_factor=2)
    assert_same_qtensor(out, up_qF.interpolate(qx, None, 2, "bilinear", True))


def test_float_input_is_a_clear_error():
    with pytest.raises(QuantizedInputError, match="quantized.functional.elu"):
        qF.elu(torch.randn(3), 0.1, 0)
    qx = quantize_input(X4)
    with pytest.raises(NotImplementedError, match="zero padding"):
        qF.conv2d(qx, torch.quantize_per_tensor(torch.randn(2, 3, 1, 1), 0.1, 0, torch.qint8), None,
                  padding_mode="reflect")


def test_conv2d_depthwise_under_x86_is_packed_for_onednn(monkeypatch):
    """Same rule as the Conv2d module (fxquant.nn.quantized.conv.packs_for_onednn): an
    unpadded stride-2 depthwise conv with 112 groups is packed under oneDNN, with upstream's
    integers."""
    from nn.quantized.oracle import quantized_engine

    engines: list[str] = []
    real = torch.ops.quantized.conv2d_prepack

    def recording(*args):
        engines.append(torch.backends.quantized.engine)
        return real(*args)

    monkeypatch.setattr(qF, "prepack_conv", lambda prepack, *args: prepack_conv(recording, *args))
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(112, 1, 3, 3, generator=gen)
    qw = torch.quantize_per_channel(w, w.abs().amax((1, 2, 3)) / 127, torch.zeros(112, dtype=torch.long), 0, torch.qint8)
    x = torch.quantize_per_tensor(torch.randn(1, 112, 13, 13, generator=gen).relu() * 3, 0.03, 0, torch.quint8)
    bias = torch.linspace(-1, 1, 112)
    with quantized_engine("x86"):
        out = qF.conv2d(x, qw, bias, stride=2, groups=112, scale=0.05, zero_point=64)
        expected = up_qF.conv2d(x, qw, bias, stride=2, groups=112, scale=0.05, zero_point=64)
    assert engines == ["onednn"]
    assert_same_qtensor(out, expected)
