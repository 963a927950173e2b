"""A qconfig that can quantize nothing is reported by name, never silently ignored."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

import fxquant
from fxquant.eager import find_unused_qconfigs, propagate_qconfig_
from fxquant.observers import QuantizationWarning

QUANTIZABLE = {nn.Linear, nn.Sequential}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gelu = nn.GELU()
        self.block = nn.Sequential(nn.Tanh(), nn.GELU())
        self.mixed = nn.Sequential(nn.Linear(4, 4), nn.GELU())


@pytest.mark.parametrize(
    "qconfig_dict, expected",
    [
        ({nn.Linear: fxquant.default_dynamic_qconfig}, []),
        ({nn.GELU: fxquant.default_dynamic_qconfig}, ["gelu", "block.1", "mixed.1"]),
        ({"gelu": fxquant.default_dynamic_qconfig}, ["gelu"]),
        ({"block": fxquant.default_dynamic_qconfig}, ["block"]),
        ({"mixed": fxquant.default_dynamic_qconfig}, []),
        ({"": fxquant.default_dynamic_qconfig}, []),  # inherited everywhere: not user-set
    ],
    ids=["supported-type", "unsupported-type", "unsupported-name", "container-of-unsupported",
         "container-with-supported", "global"],
)
def test_reports_user_set_qconfigs_without_effect(qconfig_dict, expected):
    model = Net()
    propagate_qconfig_(model, qconfig_dict)
    found = find_unused_qconfigs(model, QUANTIZABLE, kind="dynamic")
    assert [entry.name for entry in found] == expected


def test_entry_names_module_type_and_reason():
    model = Net()
    propagate_qconfig_(model, {"gelu": fxquant.default_dynamic_qconfig})
    (entry,) = find_unused_qconfigs(model, QUANTIZABLE, kind="dynamic")
    assert entry.module_type is nn.GELU
    message = entry.message("quantize_dynamic")
    assert "'gelu' (GELU)" in message and "no dynamic quantized version of GELU" in message


def test_container_reason_mentions_submodules():
    model = Net()
    propagate_qconfig_(model, {"block": fxquant.default_dynamic_qconfig})
    (entry,) = find_unused_qconfigs(model, QUANTIZABLE)
    assert "none of its submodules" in entry.reason


def test_no_qconfig_means_nothing_to_report():
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationWarning)
        assert find_unused_qconfigs(Net(), QUANTIZABLE) == []
