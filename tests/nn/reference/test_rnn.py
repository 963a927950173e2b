"""Reference RNNCell / LSTMCell / GRUCell / LSTM / GRU against
torch.ao.nn.quantized.reference (same q/dq weights, same float outputs)."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized.reference as up_ref
import torch.ao.quantization as tq
from nn.quantized.oracle import assert_same_state_dict, save_load
from torch.ao.quantization.utils import get_qparam_dict
from torch.nn.utils.rnn import pack_padded_sequence

import fxquant
import fxquant.nn.quantized.reference as ref
from fxquant.nn.quantized.reference import weight_qparams_from_observer

OBSERVERS = [
    pytest.param(fxquant.default_weight_observer, tq.default_weight_observer, id="per_tensor"),
    pytest.param(fxquant.default_per_channel_weight_observer, tq.default_per_channel_weight_observer,
                 id="per_channel"),
]


def _qparams_dicts(module, ours_ctor, theirs_ctor):
    names = [n for n, _ in module.named_parameters() if n.startswith("weight")]
    ours, theirs = {"is_decomposed": False}, {"is_decomposed": False}
    for name in names:
        weight = getattr(module, name)
        ours_obs, theirs_obs = ours_ctor(), theirs_ctor()
        ours_obs(weight)
        theirs_obs(weight)
        ours[name] = weight_qparams_from_observer(ours_obs)
        theirs[name] = get_qparam_dict(theirs_obs)
    return ours, theirs


CELLS = [
    pytest.param("RNNCell", lambda: torch.nn.RNNCell(6, 5), id="rnn_cell_tanh"),
    pytest.param("RNNCell", lambda: torch.nn.RNNCell(6, 5, nonlinearity="relu"), id="rnn_cell_relu"),
    pytest.param("LSTMCell", lambda: torch.nn.LSTMCell(6, 5), id="lstm_cell"),
    pytest.param("GRUCell", lambda: torch.nn.GRUCell(6, 5, bias=False), id="gru_cell_no_bias"),
]


@pytest.mark.parametrize(("ours_ctor", "theirs_ctor"), OBSERVERS)
@pytest.mark.parametrize(("name", "make"), CELLS)
def test_cells_match_upstream(name, make, ours_ctor, theirs_ctor):
    float_cell = make()
    ours_qp, theirs_qp = _qparams_dicts(float_cell, ours_ctor, theirs_ctor)
    ours = getattr(ref, name).from_float(float_cell, ours_qp)
    theirs = getattr(up_ref, name).from_float(float_cell, theirs_qp)
    for x in (torch.randn(3, 6), torch.randn(6)):  # batched and unbatched
        assert_same_output(ours(x), theirs(x))
    assert torch.equal(ours.get_quantized_weight_ih().int_repr(), theirs.get_quantized_weight_ih().int_repr())
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())


def assert_same_output(a, b):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_output(x, y)
    else:
        assert torch.equal(a, b)


RNNS = [
    pytest.param("LSTM", lambda: torch.nn.LSTM(6, 5, num_layers=2), False, id="lstm_2_layers"),
    pytest.param("LSTM", lambda: torch.nn.LSTM(6, 5, batch_first=True, bidirectional=True), True,
                 id="lstm_bidirectional_batch_first"),
    pytest.param("GRU", lambda: torch.nn.GRU(6, 5, num_layers=2, bidirectional=True), False, id="gru"),
]


@pytest.mark.parametrize(("ours_ctor", "theirs_ctor"), OBSERVERS)
@pytest.mark.parametrize(("name", "make", "batch_first"), RNNS)
def test_recurrences_match_upstream(name, make, batch_first, ours_ctor, theirs_ctor):
    float_rnn = make()
    ours_qp, theirs_qp = _qparams_dicts(float_rnn, ours_ctor, theirs_ctor)
    ours = getattr(ref, name).from_float(float_rnn, ours_qp)
    theirs = getattr(up_ref, name).from_float(float_rnn, theirs_qp)
    x = torch.randn(3, 7, 6) if batch_first else torch.randn(7, 3, 6)
    with torch.no_grad():  # the first call after from_float, in inference mode
        assert_same_output(ours(x), theirs(x))
    assert_same_output(ours(x), theirs(x))
    assert_same_output(ours(x[0]), theirs(x[0]))  # unbatched
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    # the float weights are untouched by the q/dq forward
    assert all(a is b for a, b in zip(ours._flat_weights, float_rnn._flat_weights))


def test_lstm_packed_sequence_matches_upstream():
    float_rnn = torch.nn.LSTM(6, 5)
    ours_qp, theirs_qp = _qparams_dicts(float_rnn, fxquant.default_weight_observer, tq.default_weight_observer)
    ours, theirs = ref.LSTM.from_float(float_rnn, ours_qp), up_ref.LSTM.from_float(float_rnn, theirs_qp)
    packed = pack_padded_sequence(torch.randn(7, 3, 6), torch.tensor([7, 5, 2]))
    (out_a, hid_a), (out_b, hid_b) = ours(packed), theirs(packed)
    assert torch.equal(out_a.data, out_b.data)
    assert_same_output(hid_a, hid_b)


def test_reference_lstm_differs_from_float_only_by_weight_rounding():
    float_rnn = torch.nn.LSTM(6, 5)
    ours_qp, _ = _qparams_dicts(float_rnn, fxquant.default_per_channel_weight_observer,
                                tq.default_per_channel_weight_observer)
    ours = ref.LSTM.from_float(float_rnn, ours_qp)
    x = torch.randn(7, 3, 6)
    out, _ = ours(x)
    expected, _ = float_rnn(x)
    assert not torch.equal(out, expected)
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=0)
    assert torch.equal(save_load(ours, weights_only=False)(x)[0], out)


def test_quantized_weight_dict_holds_quantized_weights_and_float_biases():
    ours = ref.GRU(4, 3)
    quantized = ours.get_quantized_weight_bias_dict()
    assert quantized["weight_ih_l0"].is_quantized
    assert not quantized["bias_ih_l0"].is_quantized


def test_bad_qparams_are_rejected():
    with pytest.raises(ValueError, match="weight_ih, weight_hh and is_decomposed"):
        ref.LSTMCell(3, 2, weight_qparams_dict={"weight_ih": {}})
    bad = {"qscheme": torch.per_channel_affine_float_qparams, "dtype": torch.quint8}
    with pytest.raises(ValueError, match="not supported"):
        ref.GRUCell(3, 2, weight_qparams_dict={"weight_ih": bad, "weight_hh": bad, "is_decomposed": False})
    with pytest.raises(ValueError, match="proj_size"):
        ref.GRU(3, 2, proj_size=1)
