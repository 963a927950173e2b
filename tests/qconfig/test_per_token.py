"""``per_token_dynamic_qconfig`` and ``is_per_token_dynamic_qconfig``."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import fxquant
import fxquant.nn.quantized.dynamic as nnqd
from fxquant.qconfig.per_token import (
    PerTokenDynamicObserver,
    is_per_token_dynamic_qconfig,
    per_token_dynamic_qconfig,
    per_token_symmetric_dynamic_qconfig,
)


@pytest.mark.parametrize(
    "qconfig,symmetric",
    [(per_token_dynamic_qconfig, False), (per_token_symmetric_dynamic_qconfig, True)],
    ids=["asymmetric", "symmetric"],
)
def test_qconfig_describes_per_token_activations_and_per_channel_weights(qconfig, symmetric):
    activation, weight = qconfig.activation(), qconfig.weight()
    assert isinstance(activation, PerTokenDynamicObserver)
    assert isinstance(activation, fxquant.PlaceholderObserver)
    assert activation.is_dynamic and activation.dtype == torch.qint8
    assert isinstance(activation.granularity, fxquant.PerToken)
    assert activation.symmetric is symmetric
    assert (activation.quant_min, activation.quant_max) == (-128, 127)
    assert weight.dtype == torch.qint8 and weight.qscheme == torch.per_channel_symmetric
    x = torch.randn(3, 4)
    assert activation(x) is x  # records nothing


@pytest.mark.parametrize(
    "qconfig,expected",
    [
        (per_token_dynamic_qconfig, True),
        (per_token_symmetric_dynamic_qconfig, True),
        (fxquant.default_dynamic_qconfig, False),
        (fxquant.per_channel_dynamic_qconfig, False),
        (fxquant.float16_dynamic_qconfig, False),
        (tq.default_dynamic_qconfig, False),
        (fxquant.QConfig(activation=None, weight=fxquant.default_weight_observer), False),
        (None, False),
    ],
    ids=["per_token", "per_token_symmetric", "default_dynamic", "per_channel_dynamic",
         "float16_dynamic", "upstream_default_dynamic", "no_activation", "none"],
)  # fmt: skip
def test_is_per_token_dynamic_qconfig(qconfig, expected):
    assert is_per_token_dynamic_qconfig(qconfig) is expected


def test_qconfig_drives_per_token_linear_conversion():
    float_linear = nn.Linear(16, 8)
    for qconfig, symmetric in ((per_token_dynamic_qconfig, False),
                               (per_token_symmetric_dynamic_qconfig, True)):  # fmt: skip
        float_linear.qconfig = qconfig
        qlinear = nnqd.PerTokenLinear.from_float(float_linear)
        assert qlinear.symmetric_activations is symmetric


@pytest.mark.parametrize(
    "kwargs,match",
    [({"dtype": torch.quint8}, "torch.qint8"), ({"is_dynamic": False}, "is_dynamic"),
     ({"qscheme": torch.per_channel_affine_float_qparams}, "qscheme")],
    ids=["dtype", "static", "qscheme"],
)  # fmt: skip
def test_observer_rejects_what_it_cannot_stand_for(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PerTokenDynamicObserver(**kwargs)


def test_observer_has_no_qparams_to_calculate():
    with pytest.raises(RuntimeError, match="records no statistics"):
        PerTokenDynamicObserver().calculate_qparams()
    assert "per-token asymmetric" in repr(PerTokenDynamicObserver())
