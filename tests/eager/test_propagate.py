"""propagate_qconfig_ places qconfigs exactly where upstream's does."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import fxquant
from fxquant.eager import propagate_qconfig_


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(1, 1, 1))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Block()
        self.b = Block()
        self.head = nn.Linear(4, 2)


def _fingerprint(qconfig):
    """What a qconfig builds, comparable across fxquant and upstream observer classes."""
    if qconfig is None:
        return None
    act = qconfig.activation()
    return (type(act).__name__, act.dtype, getattr(act, "qscheme", None))


def _placement(model):
    return {name: _fingerprint(getattr(m, "qconfig", None)) for name, m in model.named_modules()}


# (ours, upstream) pairs of distinguishable qconfigs
GLOBAL = (fxquant.default_qconfig, tq.default_qconfig)
DYNAMIC = (fxquant.default_dynamic_qconfig, tq.default_dynamic_qconfig)
DEBUG = (fxquant.default_debug_qconfig, tq.default_debug_qconfig)

CASES = {
    "type-overrides-parent": lambda i: ({nn.Linear: DYNAMIC[i]}, {"": GLOBAL[i]}),
    "name-overrides-type": lambda i: ({nn.Linear: DYNAMIC[i], "a.fc": DEBUG[i]}, {}),
    "name-none-keeps-float": lambda i: ({"b": None}, {"": GLOBAL[i]}),
    "attribute-overrides-name": lambda i: ({"a.fc": DYNAMIC[i]}, {"a.fc": DEBUG[i]}),
    "container-name": lambda i: ({"a.inner": DEBUG[i]}, {}),
    "dynamic-types": lambda i: ({nn.Linear: DYNAMIC[i], nn.Conv2d: DYNAMIC[i]}, {}),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_placement_matches_upstream(case):
    placements = []
    for i, propagate in enumerate([propagate_qconfig_, tq.propagate_qconfig_]):
        torch.manual_seed(0)
        model = Net()
        qconfig_dict, attributes = CASES[case](i)
        for name, qconfig in attributes.items():
            model.get_submodule(name).qconfig = qconfig
        propagate(model, qconfig_dict)
        placements.append(_placement(model))
    assert placements[0] == placements[1]
    assert any(v is not None for v in placements[0].values())


def test_observers_are_built_on_the_module_device():
    model = Net().to(torch.float32)
    propagate_qconfig_(model, {nn.Linear: fxquant.default_qconfig})
    observer = model.a.fc.qconfig.activation()
    assert observer.min_val.device == model.a.fc.weight.device


def test_non_traceable_children_keep_their_own_qconfig():
    model = Net()
    propagate_qconfig_(model, {"": fxquant.default_qconfig},
                       {"non_traceable_module_name": ["b"]})
    assert model.a.fc.qconfig is not None
    assert getattr(model.b, "qconfig", None) is None
    assert getattr(model.b.fc, "qconfig", None) is None


@pytest.mark.parametrize(
    "bad_dict, match",
    [({nn.Linear: torch.qint8}, "not a QConfig"), ({3: fxquant.default_qconfig}, "module type")],
    ids=["dtype-as-qconfig", "int-key"],
)
def test_bad_qconfig_dict_entry_is_named(bad_dict, match):
    with pytest.raises(TypeError, match=match):
        propagate_qconfig_(Net(), bad_dict)


def test_per_channel_conv_transpose_is_rejected_like_upstream():
    qconfig = fxquant.get_default_qconfig("x86")  # per-channel weights
    model = nn.Sequential(nn.ConvTranspose2d(2, 2, 2))
    with pytest.raises(AssertionError, match="ConvTranspose2d"):
        propagate_qconfig_(model, {"": qconfig})
    with pytest.raises(AssertionError):
        tq.propagate_qconfig_(nn.Sequential(nn.ConvTranspose2d(2, 2, 2)),
                              {"": tq.get_default_qconfig("x86")})
