"""fxquant.speed.units: quantized units (anchor + fused post-ops) and the tensors between them."""

from __future__ import annotations

import torch
from speed.speed_helpers import ConvChain, OneConv, PadConv, Residual, annotated

from fxquant.speed.units import find_units, module_path


def test_chain_units_fuse_relu_and_link_by_tensors():
    gm = annotated(ConvChain(), torch.randn(1, 3, 8, 8))
    ug = find_units(gm)
    assert [u.name for u in ug.units] == ["conv2d", "conv2d_1", "conv2d_2"]
    assert [[p.name for p in u.post_ops] for u in ug.units] == [["relu"], ["relu_1"], ["relu_2"]]
    assert [[a.name for a in u.activation_inputs] for u in ug.units] == [["x"], ["relu"], ["relu_1"]]
    flows = {f.tensor: f for f in ug.flows}
    assert flows["x"].producer_unit is None and flows["x"].quantized_readers == ("conv2d",)
    assert flows["relu"].producer_unit == "conv2d" and flows["relu"].quantized_readers == ("conv2d_1",)
    assert not flows["relu"].float_readers
    # the last unit's output goes to the graph output: read in float
    assert flows["relu_2"].producer_unit == "conv2d_2" and flows["relu_2"].float_readers
    assert flows["relu_1"].shape == (1, 8, 8, 8)


def test_module_paths_of_anchors():
    gm = annotated(ConvChain(), torch.randn(1, 3, 8, 8))
    assert [module_path(u.anchor) for u in find_units(gm).units] == ["conv1", "dw", "conv2"]


def test_residual_add_is_fused_into_the_project_conv():
    gm = annotated(Residual(), torch.randn(1, 3, 4, 4))
    ug = find_units(gm)
    project = ug.unit("conv2d_2")
    assert [p.name for p in project.post_ops] == ["add"]
    # the skip tensor is read quantized by both the expand conv and the fused add
    skip = next(f for f in ug.flows if f.tensor == "conv2d")
    assert set(skip.quantized_readers) == {"conv2d_1", "conv2d_2"}
    assert not skip.float_readers


def test_single_unit_and_float_nodes():
    gm = annotated(OneConv(), torch.randn(1, 3, 8, 8))
    ug = find_units(gm)
    assert len(ug.units) == 1 and ug.units[0].post_ops[0].name == "relu"
    assert ug.float_nodes == ()


def test_dynamic_linear_is_marked_dynamic():
    gm = annotated(torch.nn.Sequential(torch.nn.Linear(16, 8)), torch.randn(2, 16), is_dynamic=True)
    (unit,) = find_units(gm).units
    assert unit.anchor.target == torch.ops.aten.linear.default and unit.dynamic


def test_unknown_unit_name_is_a_clear_error():
    gm = annotated(OneConv(), torch.randn(1, 3, 8, 8))
    try:
        find_units(gm).unit("nope")
    except KeyError as e:
        assert "conv2d" in str(e)
    else:
        raise AssertionError("expected KeyError")


def test_passthrough_ops_follow_their_reader_or_stay_float():
    gm = annotated(PadConv(), torch.randn(1, 3, 8, 8))
    ug = find_units(gm)
    assert [(u.name, u.passthrough) for u in ug.units] == [("pad", True), ("conv2d", False), ("flatten", True)]
    # the pad is read as int8 by the conv; the flatten is read by a float sigmoid
    assert ug.follows == {"pad": "conv2d", "flatten": None}
    flows = {f.tensor: f for f in ug.flows}
    assert flows["x"].quantized_readers == ("pad",)
    assert flows["relu"].quantized_readers == ("flatten",) and not flows["relu"].float_readers
    assert [n.name for n in ug.float_nodes] == ["sigmoid"]
