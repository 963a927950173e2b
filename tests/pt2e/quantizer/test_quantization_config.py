"""QuantizationConfig: upstream's field order, validation, and the role accessors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fxquant.observers import HistogramObserver, PerChannelMinMaxObserver, PlaceholderObserver
from fxquant.pt2e.quantizer.quantization_config import (
    InvalidQuantizationConfigError,
    OperatorConfig,
    QuantizationConfig,
    get_bias_qspec,
    get_input_act_qspec,
    get_output_act_qspec,
    get_weight_qspec,
)
from fxquant.pt2e.quantizer.quantizer import QuantizationSpec

ACT = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
                       observer_or_fake_quant_ctr=HistogramObserver)
WEIGHT = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric,
                          ch_axis=0, observer_or_fake_quant_ctr=PerChannelMinMaxObserver)
PER_CHANNEL_ACT = dataclasses.replace(ACT, qscheme=torch.per_channel_affine, ch_axis=1)
AFFINE_WEIGHT = dataclasses.replace(WEIGHT, qscheme=torch.per_channel_affine)
FLOAT_BIAS = QuantizationSpec(dtype=torch.float, observer_or_fake_quant_ctr=PlaceholderObserver)


def test_positional_fields_in_upstream_order_and_frozen():
    config = QuantizationConfig(ACT, None, WEIGHT, FLOAT_BIAS, True)
    assert (config.input_activation, config.output_activation, config.weight, config.bias, config.is_qat) == (
        ACT, None, WEIGHT, FLOAT_BIAS, True)
    assert QuantizationConfig(ACT, None, WEIGHT, None).is_qat is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.is_qat = False  # type: ignore[misc]
    assert hash(config) == hash(QuantizationConfig(ACT, None, WEIGHT, FLOAT_BIAS, True))
    assert OperatorConfig(config, [[torch.nn.Linear]]).config is config


@pytest.mark.parametrize("fields", [("not a spec", None, None, None), (None, None, None, None, "yes")], ids=["spec", "is_qat"])
def test_construction_rejects_wrong_types(fields):
    with pytest.raises(InvalidQuantizationConfigError, match="QuantizationConfig"):
        QuantizationConfig(*fields)


def test_accessors_return_each_role_and_none_for_a_missing_config():
    config = QuantizationConfig(ACT, ACT, WEIGHT, FLOAT_BIAS)
    assert get_input_act_qspec(config) is ACT and get_output_act_qspec(config) is ACT
    assert get_weight_qspec(config) is WEIGHT and get_bias_qspec(config) is FLOAT_BIAS
    for accessor in (get_input_act_qspec, get_output_act_qspec, get_weight_qspec, get_bias_qspec):
        assert accessor(None) is None
        assert accessor(QuantizationConfig(None, None, None, None)) is None


@pytest.mark.parametrize(
    "accessor, config, message",
    [
        (get_input_act_qspec, QuantizationConfig(PER_CHANNEL_ACT, None, None, None), "per-tensor"),
        (get_output_act_qspec, QuantizationConfig(None, PER_CHANNEL_ACT, None, None), "per-tensor"),
        (get_weight_qspec, QuantizationConfig(None, None, AFFINE_WEIGHT, None), "weight qscheme"),
        (get_bias_qspec, QuantizationConfig(None, None, None, ACT), "bias spec dtype"),
    ],
    ids=["input", "output", "weight", "bias"],
)
def test_accessors_reject_specs_that_do_not_fit_the_role(accessor, config, message):
    with pytest.raises(InvalidQuantizationConfigError, match=message):
        accessor(config)


def test_float16_weight_without_qscheme_is_accepted():
    fp16 = QuantizationSpec(dtype=torch.float16, observer_or_fake_quant_ctr=PlaceholderObserver)
    assert get_weight_qspec(QuantizationConfig(None, None, fp16, None)) is fp16
