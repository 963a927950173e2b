"""Fused float containers: same forward as their parts in sequence and as upstream's
``torch.ao.nn.intrinsic`` containers; exact part types are enforced."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic as tnni
from torch import nn

import fxquant.nn.intrinsic as nni

CASES = {
    "ConvReLU1d": (lambda: (nn.Conv1d(3, 4, 3), nn.ReLU()), (2, 3, 9)),
    "ConvReLU2d": (lambda: (nn.Conv2d(3, 4, 3), nn.ReLU()), (2, 3, 7, 7)),
    "ConvReLU3d": (lambda: (nn.Conv3d(3, 4, 3), nn.ReLU()), (2, 3, 5, 5, 5)),
    "LinearReLU": (lambda: (nn.Linear(6, 5), nn.ReLU()), (4, 6)),
    "ConvBn1d": (lambda: (nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4)), (2, 3, 9)),
    "ConvBn2d": (lambda: (nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (2, 3, 7, 7)),
    "ConvBn3d": (lambda: (nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4)), (2, 3, 5, 5, 5)),
    "ConvBnReLU1d": (lambda: (nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4), nn.ReLU()), (2, 3, 9)),
    "ConvBnReLU2d": (lambda: (nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), (2, 3, 7, 7)),
    "ConvBnReLU3d": (
        lambda: (nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.ReLU()),
        (2, 3, 5, 5, 5),
    ),
    "BNReLU2d": (lambda: (nn.BatchNorm2d(3), nn.ReLU()), (2, 3, 5, 5)),
    "BNReLU3d": (lambda: (nn.BatchNorm3d(3), nn.ReLU()), (2, 3, 4, 4, 4)),
    "LinearBn1d": (lambda: (nn.Linear(6, 5), nn.BatchNorm1d(5)), (4, 6)),
    "LinearLeakyReLU": (lambda: (nn.Linear(6, 5), nn.LeakyReLU(0.1)), (4, 6)),
    "LinearTanh": (lambda: (nn.Linear(6, 5), nn.Tanh()), (4, 6)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_equals_parts_and_upstream(name):
    make, shape = CASES[name]
    parts = make()
    ours = getattr(nni, name)(*copy.deepcopy(parts)).eval()
    theirs = getattr(tnni, name)(*copy.deepcopy(parts)).eval()
    x = torch.randn(shape)
    expected = nn.Sequential(*parts).eval()(x)
    assert isinstance(ours, nni._FusedModule)
    assert torch.equal(ours(x), expected)
    assert torch.equal(ours(x), theirs(x))
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("name", list(CASES))
def test_wrong_part_types_are_rejected_with_their_names(name):
    make, _ = CASES[name]
    parts = list(make())
    parts[0] = nn.Identity()
    with pytest.raises(nni.FusedModuleTypeError, match=rf"{name} fuses .* got \(Identity"):
        getattr(nni, name)(*parts)


def test_type_error_is_also_an_assertion_error_like_upstream():
    with pytest.raises(AssertionError):
        nni.ConvReLU2d(nn.Conv1d(1, 1, 1), nn.ReLU())


def test_subclass_of_a_part_is_not_accepted():
    class MyConv(nn.Conv2d):
        pass

    with pytest.raises(TypeError, match="MyConv"):
        nni.ConvReLU2d(MyConv(1, 1, 1), nn.ReLU())


@pytest.mark.parametrize("with_relu", [False, True], ids=["ConvAdd2d", "ConvAddReLU2d"])
def test_conv_add_takes_two_inputs(with_relu):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x1, x2 = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5)
    if with_relu:
        ours = nni.ConvAddReLU2d(copy.deepcopy(conv), torch.add, nn.ReLU())
        theirs = tnni.ConvAddReLU2d(copy.deepcopy(conv), torch.add, nn.ReLU())
        expected = torch.relu(conv(x1) + x2)
    else:
        ours = nni.ConvAdd2d(copy.deepcopy(conv), torch.add)
        theirs = tnni.ConvAdd2d(copy.deepcopy(conv), torch.add)
        expected = conv(x1) + x2
    assert torch.equal(ours(x1, x2), expected)
    assert torch.equal(ours(x1, x2), theirs(x1, x2))


def test_subpackages_load_lazily():
    assert nni.qat.ConvBnReLU2d.__name__ == "ConvBnReLU2d"
    with pytest.raises(AttributeError):
        _ = nni.no_such_thing  # type: ignore[attr-defined]
