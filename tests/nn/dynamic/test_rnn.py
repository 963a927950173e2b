"""Dynamic quantized ``LSTM`` and ``GRU`` against ``torch.ao.nn.quantized.dynamic``."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_sqnr
from nn.dynamic.oracle import dynamic_pair, flatten
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fxquant
import fxquant.nn.quantized.dynamic as nnqd
from fxquant.nn._errors import QuantizedInputError

LAYOUTS = {
    "1_layer": {},
    "2_layers_bidirectional": {"num_layers": 2, "bidirectional": True},
    "batch_first": {"batch_first": True},
}


def _input(float_rnn: nn.RNNBase) -> torch.Tensor:
    return torch.randn(3, 5, 8) if float_rnn.batch_first else torch.randn(5, 3, 8)


@pytest.mark.parametrize("qconfig_name", ["int8", "float16"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_matches_upstream_bit_for_bit(kind, layout, qconfig_name):
    float_rnn = getattr(nn, kind)(8, 12, **LAYOUTS[layout])
    ours, theirs = dynamic_pair(float_rnn, qconfig_name)
    x = _input(float_rnn)
    out = ours(x)
    assert torch.equal(flatten(out), flatten(theirs(x)))
    assert_sqnr(flatten(float_rnn(x)).detach(), flatten(out).detach(), min_db=20)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_initial_state_and_packed_sequence(kind):
    float_rnn = getattr(nn, kind)(8, 12, num_layers=2)
    ours, theirs = dynamic_pair(float_rnn, "int8")
    h0 = torch.randn(2, 3, 12)
    hx = (h0, torch.randn(2, 3, 12)) if kind == "LSTM" else h0
    x = torch.randn(5, 3, 8)
    assert torch.equal(flatten(ours(x, hx)), flatten(theirs(x, hx)))
    packed = pack_padded_sequence(x, torch.tensor([5, 2, 4]), enforce_sorted=False)
    out_ours, out_theirs = ours(packed, hx), theirs(packed, hx)
    assert isinstance(out_ours[0], nn.utils.rnn.PackedSequence)
    assert torch.equal(flatten(out_ours), flatten(out_theirs))


@pytest.mark.parametrize("qconfig_name", ["int8", "float16"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_state_dict_loads_both_ways(kind, qconfig_name):
    def make() -> nn.Module:
        return getattr(nn, kind)(8, 12, num_layers=2, bidirectional=True)

    ours, theirs = dynamic_pair(make(), qconfig_name)
    fresh_ours, fresh_theirs = dynamic_pair(make(), qconfig_name)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    fresh_ours.load_state_dict(theirs.state_dict())
    fresh_theirs.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3, 8)
    assert torch.equal(flatten(fresh_ours(x)), flatten(theirs(x)))
    assert torch.equal(flatten(fresh_theirs(x)), flatten(ours(x)))


def test_weights_read_back_as_upstream():
    ours, theirs = dynamic_pair(nn.LSTM(8, 12, num_layers=2), "int8")
    ours_w, theirs_w = ours.get_weight(), theirs.get_weight()
    assert ours_w.keys() == theirs_w.keys()
    for name, w in ours_w.items():
        assert torch.equal(w.int_repr(), theirs_w[name].int_repr())
    ours_b, theirs_b = ours.get_bias(), theirs.get_bias()
    assert all(torch.equal(b, theirs_b[n]) for n, b in ours_b.items())


def test_torch_save_whole_model(tmp_path):
    ours, _ = dynamic_pair(nn.GRU(8, 12), "int8")
    x = torch.randn(5, 3, 8)
    torch.save(ours, tmp_path / "gru.pt")
    loaded = torch.load(tmp_path / "gru.pt", weights_only=False)
    assert torch.equal(flatten(loaded(x)), flatten(ours(x)))


def test_errors_name_the_problem():
    lstm = nn.LSTM(8, 12, bias=False)
    lstm.qconfig = fxquant.default_dynamic_qconfig
    with pytest.raises(nnqd.DynamicDTypeError, match="bias=True"):
        nnqd.LSTM.from_float(lstm)
    rnn = nn.RNN(8, 12)
    rnn.qconfig = fxquant.default_dynamic_qconfig
    with pytest.raises(AssertionError, match="converts nn.LSTM and nn.GRU"):
        nnqd.LSTM.from_float(rnn)
    ours, _ = dynamic_pair(nn.LSTM(8, 12), "int8")
    with pytest.raises(QuantizedInputError):
        ours(torch.quantize_per_tensor(torch.randn(5, 3, 8), 0.1, 128, torch.quint8))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        ours(torch.randn(5, 3, 7))
    with pytest.raises(ValueError, match="dropout"):
        nnqd.LSTM(8, 12, dropout=2.0)


def test_from_reference_matches_upstream():
    import torch.ao.nn.quantized.dynamic as tnnqd
    import torch.ao.nn.quantized.reference as tnnqr

    qparams = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8, "scale": 0.01,
               "zero_point": 0}  # fmt: skip
    weight_qparams = {f"{w}_l{i}": qparams for i in range(2) for w in ("weight_ih", "weight_hh")}
    ref = tnnqr.LSTM.from_float(nn.LSTM(8, 12, 2), {**weight_qparams, "is_decomposed": False})
    x = torch.randn(5, 3, 8)
    assert torch.equal(
        flatten(nnqd.LSTM.from_reference(ref)(x)), flatten(tnnqd.LSTM.from_reference(ref)(x))
    )
