"""Typed node metadata and graph helpers of the lowering."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxquant.lowering.graph import (
    QTensorMeta,
    add_constant,
    constant_value,
    eliminate_dead_code,
    qmeta,
    set_qmeta,
)


def test_qtensor_meta_quantizes_like_torch():
    meta = QTensorMeta(scale=0.1, zero_point=3, dtype=torch.quint8)
    for value in (-5.0, -0.3, 0.0, 0.04, 0.26, 6.0, 100.0):
        expected = torch.quantize_per_tensor(torch.tensor([value]), 0.1, 3, torch.quint8).int_repr().item()
        assert meta.quantize(value) == expected
    assert (meta.qmin, meta.qmax) == (0, 255)
    assert QTensorMeta(scale=1.0, zero_point=0, dtype=torch.qint8).qmin == -128


@pytest.mark.parametrize("kwargs", [{"scale": 0.0, "zero_point": 0, "dtype": torch.quint8},
                                    {"scale": 0.1, "zero_point": 0, "dtype": torch.uint8}], ids=["scale", "dtype"])
def test_qtensor_meta_validates(kwargs):
    with pytest.raises(ValueError, match="QTensorMeta"):
        QTensorMeta(**kwargs)


def test_meta_constants_and_dead_code():
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.ReLU(), nn.ReLU()))
    relu = next(n for n in gm.graph.nodes if n.op == "call_module")
    assert qmeta(relu) is None and qmeta(3) is None
    meta = QTensorMeta(scale=0.5, zero_point=1, dtype=torch.quint8)
    assert qmeta(set_qmeta(relu, meta)) == meta
    node = add_constant(gm, "w", torch.ones(2), relu)
    assert torch.equal(constant_value(gm, node), torch.ones(2)) and constant_value(gm, relu) is None
    eliminate_dead_code(gm)  # nobody reads the constant: node and attribute are gone
    assert not any(n.op == "get_attr" for n in gm.graph.nodes)
    assert not [k for k in dict(gm.named_buffers()) if k.startswith("_fxquant_")]
