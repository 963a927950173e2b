"""Dynamic quantized cells against ``torch.ao.nn.quantized.dynamic``."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_sqnr
from nn.dynamic.oracle import dynamic_pair, flatten
from torch import nn

import fxquant
import fxquant.nn.quantized.dynamic as nnqd

CELLS = {
    "LSTMCell": lambda: nn.LSTMCell(8, 12),
    "GRUCell": lambda: nn.GRUCell(8, 12),
    "RNNCell_tanh": lambda: nn.RNNCell(8, 12),
    "RNNCell_relu": lambda: nn.RNNCell(8, 12, nonlinearity="relu"),
}


def _state(cell: nn.Module, batch: int) -> object:
    h = torch.randn(batch, 12)
    return (h, torch.randn(batch, 12)) if isinstance(cell, nn.LSTMCell) else h


@pytest.mark.parametrize("qconfig_name", ["int8", "float16"])
@pytest.mark.parametrize("name", list(CELLS))
def test_matches_upstream_bit_for_bit(name, qconfig_name):
    float_cell = CELLS[name]()
    ours, theirs = dynamic_pair(float_cell, qconfig_name)
    x, hx = torch.randn(4, 8), _state(float_cell, 4)
    assert torch.equal(flatten(ours(x)), flatten(theirs(x)))
    out = ours(x, hx)
    assert torch.equal(flatten(out), flatten(theirs(x, hx)))
    assert_sqnr(flatten(float_cell(x, hx)).detach(), flatten(out).detach(), min_db=20)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("name", list(CELLS))
def test_state_dict_loads_both_ways(name):
    ours, theirs = dynamic_pair(CELLS[name](), "int8")
    fresh_ours, fresh_theirs = dynamic_pair(CELLS[name](), "int8")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    fresh_ours.load_state_dict(theirs.state_dict())
    fresh_theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 8)
    assert torch.equal(flatten(fresh_ours(x)), flatten(theirs(x)))
    assert torch.equal(flatten(fresh_theirs(x)), flatten(ours(x)))
    weights = ours.get_weight()
    assert weights["weight_ih"].shape[1] == 8 and weights["weight_hh"].shape[1] == 12


def test_torch_save_whole_module(tmp_path):
    ours, _ = dynamic_pair(nn.LSTMCell(8, 12), "int8")
    x = torch.randn(4, 8)
    torch.save(ours, tmp_path / "cell.pt")
    loaded = torch.load(tmp_path / "cell.pt", weights_only=False)
    assert torch.equal(flatten(loaded(x)), flatten(ours(x)))


def test_errors_name_the_problem():
    ours, _ = dynamic_pair(nn.GRUCell(8, 12), "int8")
    with pytest.raises(RuntimeError, match="inconsistent input_size: got 7"):
        ours(torch.randn(4, 7))
    with pytest.raises(RuntimeError, match="batch size 4 doesn't match hidden batch size 2"):
        ours(torch.randn(4, 8), torch.randn(2, 12))
    cell = nn.LSTMCell(8, 12, bias=False)
    cell.qconfig = fxquant.default_dynamic_qconfig
    with pytest.raises(nnqd.DynamicDTypeError, match="bias=True"):
        nnqd.LSTMCell.from_float(cell)
    rnn_cell = nnqd.RNNCell(8, 12, nonlinearity="gelu")
    with pytest.raises(RuntimeError, match="Unknown nonlinearity"):
        rnn_cell(torch.randn(2, 8))


def test_from_reference_matches_upstream():
    import torch.ao.nn.quantized.dynamic as tnnqd
    import torch.ao.nn.quantized.reference as tnnqr

    qparams = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8, "scale": 0.01,
               "zero_point": 0}  # fmt: skip
    ref = tnnqr.LSTMCell.from_float(
        nn.LSTMCell(8, 12), {"weight_ih": qparams, "weight_hh": qparams, "is_decomposed": False}
    )
    x = torch.randn(4, 8)
    assert torch.equal(
        flatten(nnqd.LSTMCell.from_reference(ref)(x)),
        flatten(tnnqd.LSTMCell.from_reference(ref)(x)),
    )
