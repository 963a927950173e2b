"""get_qparam_dict gives upstream's dictionary for our observers."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch.ao.quantization.utils import get_qparam_dict as upstream_get_qparam_dict

import fxquant
from fxquant.eager import get_qparam_dict

OBSERVERS = {
    "per-tensor-symmetric": (fxquant.default_weight_observer, tq.default_weight_observer),
    "per-channel-symmetric": (
        fxquant.default_per_channel_weight_observer, tq.default_per_channel_weight_observer),
    "per-tensor-affine": (fxquant.MinMaxObserver, tq.MinMaxObserver),
    "float-qparams": (
        fxquant.default_float_qparams_observer, tq.default_float_qparams_observer),
    "placeholder": (fxquant.default_placeholder_observer, tq.default_placeholder_observer),
}


@pytest.mark.parametrize("name", list(OBSERVERS), ids=list(OBSERVERS))
def test_matches_upstream(name):
    weight = torch.randn(6, 5)
    ours, theirs = (ctr() for ctr in OBSERVERS[name])
    ours(weight)
    theirs(weight)
    expected = upstream_get_qparam_dict(theirs)
    got = get_qparam_dict(ours)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key
