"""Dynamic quantized ``Linear`` against ``torch.ao.nn.quantized.dynamic.Linear``."""

from __future__ import annotations

import io

import pytest
import torch
import torch.ao.nn.quantized.dynamic as tnnqd
from helpers import assert_sqnr
from nn.dynamic.oracle import QCONFIGS, dynamic_pair
from torch import nn

import fxquant
import fxquant.nn.intrinsic as nni
import fxquant.nn.quantized.dynamic as nnqd
from fxquant.nn._errors import QuantizedInputError

SHAPES = {"2d": (16, 20), "3d": (4, 5, 20), "1_row": (1, 20)}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("qconfig_name", list(QCONFIGS))
def test_matches_upstream_bit_for_bit(qconfig_name, bias, shape):
    float_linear = nn.Linear(20, 30, bias=bias)
    ours, theirs = dynamic_pair(float_linear, qconfig_name)
    x = torch.randn(SHAPES[shape])
    y = ours(x)
    assert torch.equal(y, theirs(x))
    assert_sqnr(float_linear(x).detach(), y.detach(), min_db=25)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("qconfig_name", list(QCONFIGS))
def test_state_dict_loads_both_ways(qconfig_name):
    ours, theirs = dynamic_pair(nn.Linear(20, 30), qconfig_name)
    fresh_ours, fresh_theirs = dynamic_pair(nn.Linear(20, 30), qconfig_name)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    fresh_ours.load_state_dict(theirs.state_dict())
    fresh_theirs.load_state_dict(ours.state_dict())
    x = torch.randn(8, 20)
    assert torch.equal(fresh_ours(x), theirs(x))
    assert torch.equal(fresh_theirs(x), ours(x))


def test_old_state_dict_version_runs_without_reduce_range():
    ours, theirs = dynamic_pair(nn.Linear(20, 30), "int8")
    state = ours.state_dict()
    state._metadata[""]["version"] = 3  # type: ignore[attr-defined]
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    assert ours.version == 3
    x = torch.randn(8, 20)
    assert torch.equal(ours(x), theirs(x))


# packed weights pickle through torch's own storage path, which warns about TypedStorage
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_torch_save_whole_model(tmp_path):
    ours, _ = dynamic_pair(nn.Linear(20, 30), "int8")
    model = nn.Sequential(ours, nn.ReLU())
    x = torch.randn(3, 20)
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert torch.equal(loaded(x), model(x))


def test_fused_linear_relu_and_qat_dynamic_linear_convert():
    fused = nni.LinearReLU(nn.Linear(20, 30), nn.ReLU())
    fused.qconfig = fxquant.default_dynamic_qconfig
    qlinear = nnqd.Linear.from_float(fused)
    x = torch.randn(4, 20)
    assert_sqnr(fused[0](x).detach(), qlinear(x), min_db=25)  # the ReLU is not part of this module
    qat = fxquant.nn.qat.dynamic.Linear(20, 30, qconfig=fxquant.default_dynamic_qat_qconfig)
    assert type(nnqd.Linear.from_float(qat)) is nnqd.Linear


def test_missing_qconfig_falls_back_to_default_dynamic():
    float_linear = nn.Linear(20, 30)
    float_linear.qconfig = None
    ours = nnqd.Linear.from_float(float_linear)
    assert ours.weight().dtype == torch.qint8


def test_from_reference_matches_from_float():
    import torch.ao.nn.quantized.reference as tnnqr

    float_linear = nn.Linear(20, 30)
    weight_qparams = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8,
                      "scale": 0.01, "zero_point": 0}  # fmt: skip
    ref = tnnqr.Linear.from_float(float_linear, weight_qparams)
    ours, theirs = nnqd.Linear.from_reference(ref), tnnqd.Linear.from_reference(ref)
    x = torch.randn(4, 20)
    assert torch.equal(ours(x), theirs(x))


def test_quantized_input_gets_a_clear_error():
    ours, _ = dynamic_pair(nn.Linear(20, 30), "int8")
    xq = torch.quantize_per_tensor(torch.randn(2, 20), 0.1, 128, torch.quint8)
    with pytest.raises(QuantizedInputError, match="DynamicQuantizedLinear .* DeQuantStub"):
        ours(xq)


def test_unsupported_weight_dtype_is_reported():
    float_linear = nn.Linear(4, 4)
    float_linear.qconfig = fxquant.default_qconfig  # quint8 activations, qint8 weights: fine
    assert type(nnqd.Linear.from_float(float_linear)) is nnqd.Linear
    float_linear.qconfig = fxquant.QConfig(
        activation=fxquant.default_placeholder_observer,
        weight=fxquant.MinMaxObserver.with_args(dtype=torch.quint8),
    )
    with pytest.raises(nnqd.DynamicDTypeError, match="torch.qint8 or torch.float16"):
        nnqd.Linear.from_float(float_linear)


def test_wrong_module_type_is_reported():
    conv = nn.Conv2d(1, 1, 1)
    conv.qconfig = fxquant.default_dynamic_qconfig
    with pytest.raises(AssertionError, match="Linear.from_float converts"):
        nnqd.Linear.from_float(conv)


@pytest.mark.parametrize("qconfig_name", ["int8", "float16"])
def test_state_dict_loads_with_weights_only(qconfig_name):
    ours, _ = dynamic_pair(nn.Linear(20, 30), qconfig_name)
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    fresh, _ = dynamic_pair(nn.Linear(20, 30), qconfig_name)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 20)
    assert torch.equal(fresh(x), ours(x))
