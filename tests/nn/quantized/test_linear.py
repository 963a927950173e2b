"""fxquant.nn.quantized.Linear against torch.ao.nn.quantized.Linear (same kernels: bit-exact)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic.qat as up_nniqat
import torch.ao.nn.qat as up_nnqat
import torch.ao.nn.quantized as up_nnq
import torch.ao.quantization as tq
from nn.quantized.oracle import (
    ENGINES,
    QCONFIG_IDS,
    QCONFIGS,
    assert_same_qtensor,
    assert_same_state_dict,
    observed_pair,
    quantize_input,
    quantized_engine,
    save_load,
)

import fxquant
from fxquant.nn._errors import QuantizedInputError
from fxquant.nn.quantized import Linear
from fxquant.nn.quantized.linear import LinearPackedParams
from fxquant.nn.quantized.utils import FromFloatError


def _converted_pair(qconfig_id: str, bias: bool = True):
    _, ours_qc, theirs_qc = QCONFIGS[QCONFIG_IDS.index(qconfig_id)]
    calib = torch.randn(16, 12)
    ours_f, theirs_f = observed_pair(lambda: torch.nn.Linear(12, 7, bias=bias), ours_qc, theirs_qc, calib)
    return Linear.from_float(ours_f), up_nnq.Linear.from_float(theirs_f), calib


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("qconfig_id", QCONFIG_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_from_float_output_is_bit_exact_with_upstream(engine, qconfig_id, bias):
    with quantized_engine(engine):
        ours, theirs, calib = _converted_pair(qconfig_id, bias)
        qx = quantize_input(calib)
        assert (ours.scale, ours.zero_point) == (theirs.scale, theirs.zero_point)
        assert_same_qtensor(ours.weight(), theirs.weight())
        assert_same_qtensor(ours(qx), theirs(qx))
        # (qnnpack's unpack returns zeros for a missing bias, for upstream too)
        ours_bias, theirs_bias = ours.bias(), theirs.bias()
        assert (ours_bias is None) == (theirs_bias is None)
        assert ours_bias is None or torch.equal(ours_bias, theirs_bias)


def test_three_dimensional_input_matches_upstream():
    ours, theirs, _ = _converted_pair("per_channel")
    qx = quantize_input(torch.randn(2, 5, 12))
    assert_same_qtensor(ours(qx), theirs(qx))


@pytest.mark.parametrize("qconfig_id", QCONFIG_IDS)
def test_state_dict_has_upstream_layout_and_loads_both_ways(qconfig_id):
    ours, theirs, calib = _converted_pair(qconfig_id)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    qx = quantize_input(calib)

    fresh_theirs = up_nnq.Linear(12, 7)
    fresh_theirs.load_state_dict(ours.state_dict())
    assert_same_qtensor(fresh_theirs(qx), theirs(qx))

    fresh_ours = Linear(12, 7)
    fresh_ours.load_state_dict(theirs.state_dict())
    assert_same_qtensor(fresh_ours(qx), ours(qx))
    assert (fresh_ours.scale, fresh_ours.zero_point) == (theirs.scale, theirs.zero_point)


def test_version_one_state_dict_still_loads():
    ours, _, calib = _converted_pair("per_tensor")
    state = ours.state_dict()
    legacy = {
        "scale": state["scale"], "zero_point": state["zero_point"],
        "weight": ours.weight(), "bias": ours.bias(),
    }
    legacy_meta = type(state)(legacy)
    legacy_meta._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    fresh = Linear(12, 7)
    fresh.load_state_dict(legacy_meta)
    qx = quantize_input(calib)
    assert_same_qtensor(fresh(qx), ours(qx))


def test_repr_matches_upstream():
    ours, theirs, _ = _converted_pair("per_channel")
    assert repr(ours) == repr(theirs)
    assert repr(ours).startswith("QuantizedLinear(in_features=12, out_features=7")
    assert "_packed_params" not in repr(ours)


def test_torch_save_load_round_trip_is_bit_exact():
    ours, _, calib = _converted_pair("per_channel")
    qx = quantize_input(calib)
    loaded = save_load(ours, weights_only=False)
    assert type(loaded) is Linear
    assert_same_qtensor(loaded(qx), ours(qx))

    # state dicts load with weights_only=True (whole modules need weights_only=False, as
    # for any nn.Module pickle)
    fresh = Linear(12, 7)
    fresh.load_state_dict(save_load(ours.state_dict(), weights_only=True))
    assert_same_qtensor(fresh(qx), ours(qx))


def test_deepcopy_keeps_weights():
    ours, _, calib = _converted_pair("per_tensor")
    qx = quantize_input(calib)
    assert_same_qtensor(copy.deepcopy(ours)(qx), ours(qx))


def test_from_reference_matches_upstream():
    import torch.ao.nn.quantized.reference as up_ref
    from torch.ao.quantization.utils import get_qparam_dict

    float_linear = torch.nn.Linear(12, 7)
    observer = tq.default_per_channel_weight_observer()
    observer(float_linear.weight)
    ref = up_ref.Linear.from_float(float_linear, get_qparam_dict(observer))
    ours = Linear.from_reference(ref, 0.05, 10)
    theirs = up_nnq.Linear.from_reference(ref, 0.05, 10)
    qx = quantize_input(torch.randn(3, 12))
    assert_same_qtensor(ours(qx), theirs(qx))


@pytest.mark.parametrize("use_precomputed", [False, True], ids=["observe_again", "precomputed"])
def test_qat_linear_converts_like_upstream(use_precomputed):
    qat = up_nnqat.Linear(12, 7, qconfig=tq.get_default_qat_qconfig("x86"))
    qat.activation_post_process = tq.default_fake_quant()
    x = torch.randn(16, 12)
    qat.activation_post_process(qat(x))
    ours = Linear.from_float(copy.deepcopy(qat), use_precomputed_fake_quant=use_precomputed)
    theirs = up_nnq.Linear.from_float(copy.deepcopy(qat), use_precomputed_fake_quant=use_precomputed)
    qx = quantize_input(x)
    assert_same_qtensor(ours(qx), theirs(qx))


def test_qat_linear_bn_folds_batch_norm_like_upstream():
    qat = up_nniqat.LinearBn1d.from_float(
        _observed_float_linear_bn(tq.get_default_qat_qconfig("x86"))
    )
    qat.activation_post_process = tq.default_fake_quant()
    x = torch.randn(16, 12)
    qat.train()
    qat.activation_post_process(qat(x))
    qat.eval()
    ours = Linear.from_float(copy.deepcopy(qat))
    theirs = up_nnq.Linear.from_float(copy.deepcopy(qat))
    qx = quantize_input(x)
    assert_same_qtensor(ours(qx), theirs(qx))


def _observed_float_linear_bn(qconfig):
    import torch.ao.nn.intrinsic as up_nni

    bn = torch.nn.BatchNorm1d(7)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    fused = up_nni.LinearBn1d(torch.nn.Linear(12, 7), bn)
    fused.qconfig = qconfig
    return fused


def test_narrow_weight_range_is_clamped_like_upstream():
    ours_qc = fxquant.QConfig(
        activation=fxquant.default_observer, weight=fxquant.weight_observer_range_neg_127_to_127
    )
    theirs_qc = tq.QConfig(activation=tq.default_observer, weight=tq.weight_observer_range_neg_127_to_127)
    calib = torch.randn(16, 12)

    def make():
        m = torch.nn.Linear(12, 7)
        with torch.no_grad():
            m.weight[0, 0] = -10.0  # the extreme lands on -128 without clamping
        return m

    ours_f, theirs_f = observed_pair(make, ours_qc, theirs_qc, calib)
    ours, theirs = Linear.from_float(ours_f), up_nnq.Linear.from_float(theirs_f)
    assert int(ours.weight().int_repr().min()) >= -127
    assert_same_qtensor(ours.weight(), theirs.weight())


def test_float_input_raises_clear_error_naming_the_module():
    ours, _, calib = _converted_pair("per_tensor")
    with pytest.raises(QuantizedInputError, match=r"QuantizedLinear.*QuantStub"):
        ours(calib)


def test_from_float_rejects_unobserved_or_wrong_modules():
    with pytest.raises(FromFloatError, match="qconfig"):
        Linear.from_float(torch.nn.Linear(3, 2))
    with pytest.raises(FromFloatError, match="Conv2d"):
        Linear.from_float(torch.nn.Conv2d(3, 2, 1))
    no_observer = torch.nn.Linear(3, 2)
    no_observer.qconfig = fxquant.default_qconfig
    with pytest.raises(AssertionError, match="activation_post_process"):
        Linear.from_float(no_observer)


def test_float16_packed_params_round_trip():
    packed = LinearPackedParams(torch.float16)
    weight, bias = torch.randn(5, 4), torch.randn(5)
    packed.set_weight_bias(weight, bias)
    fresh = LinearPackedParams(torch.float16)
    fresh.load_state_dict(packed.state_dict())
    w, b = fresh._weight_bias()
    assert torch.equal(w, weight.half().float())
    assert torch.equal(b, bias)
    assert packed.state_dict()["dtype"] == torch.float16
