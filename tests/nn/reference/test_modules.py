"""Reference Linear / Conv* / ConvTranspose* / Embedding(Bag) against
torch.ao.nn.quantized.reference: same q/dq weight, same float output, same state dict."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized.reference as up_ref
import torch.ao.quantization as tq
from nn.quantized.oracle import assert_same_state_dict, save_load
from torch.ao.quantization.utils import get_qparam_dict

import fxquant
import fxquant.nn.quantized.reference as ref
from fxquant.nn.quantized.reference import weight_qparams_from_observer

WEIGHTED = [
    ("linear", "Linear", lambda: torch.nn.Linear(16, 8), (4, 16)),
    ("conv1d", "Conv1d", lambda: torch.nn.Conv1d(4, 6, 3, stride=2), (2, 4, 9)),
    ("conv2d", "Conv2d", lambda: torch.nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 6, 6)),
    ("conv3d", "Conv3d", lambda: torch.nn.Conv3d(4, 6, 3), (1, 4, 4, 4, 4)),
    ("conv_transpose1d", "ConvTranspose1d", lambda: torch.nn.ConvTranspose1d(4, 6, 3, stride=2), (2, 4, 5)),
    ("conv_transpose2d", "ConvTranspose2d",
     lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1), (2, 4, 5, 5)),
    ("conv_transpose3d", "ConvTranspose3d", lambda: torch.nn.ConvTranspose3d(4, 6, 3), (1, 4, 3, 3, 3)),
]
# (id, fxquant observer, upstream observer, needs the transposed channel axis)
WEIGHT_OBSERVERS = [
    ("per_tensor", fxquant.default_weight_observer, tq.default_weight_observer),
    ("per_channel", fxquant.default_per_channel_weight_observer, tq.default_per_channel_weight_observer),
    ("per_tensor_quint8", fxquant.MinMaxObserver, tq.MinMaxObserver),
]
CASES = [
    pytest.param(w[1], w[2], w[3], o[1], o[2], decomposed,
                 id=f"{w[0]}-{o[0]}{'-decomposed' if decomposed else ''}")
    for w in WEIGHTED for o in WEIGHT_OBSERVERS for decomposed in (False, True)
]


def _qparams(ours_ctor, theirs_ctor, weight, transposed, decomposed):
    per_channel = ours_ctor().qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
    kwargs = {"ch_axis": 1} if transposed and per_channel else {}
    ours_obs, theirs_obs = ours_ctor(**kwargs), theirs_ctor(**kwargs)
    ours_obs(weight)
    theirs_obs(weight)
    ours, theirs = weight_qparams_from_observer(ours_obs), get_qparam_dict(theirs_obs)
    ours["is_decomposed"] = theirs["is_decomposed"] = decomposed
    return ours, theirs


@pytest.mark.parametrize(("name", "make", "shape", "ours_ctor", "theirs_ctor", "decomposed"), CASES)
def test_reference_module_matches_upstream(name, make, shape, ours_ctor, theirs_ctor, decomposed):
    float_mod = make()
    ours_qp, theirs_qp = _qparams(ours_ctor, theirs_ctor, float_mod.weight, "Transpose" in name,
                                  decomposed)
    assert set(ours_qp) == set(theirs_qp)
    ours = getattr(ref, name).from_float(float_mod, ours_qp)
    theirs = getattr(up_ref, name).from_float(float_mod, theirs_qp)
    x = torch.randn(shape)
    assert torch.equal(ours.get_weight(), theirs.get_weight())
    qa, qb = ours.get_quantized_weight(), theirs.get_quantized_weight()
    assert torch.equal(qa.int_repr() if qa.is_quantized else qa, qb.int_repr() if qb.is_quantized else qb)
    assert torch.equal(ours(x), theirs(x))
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())


@pytest.mark.parametrize("name", ["Linear", "Conv2d"])
def test_state_dict_loads_both_ways_and_module_pickles(name):
    make = {w[1]: w[2] for w in WEIGHTED}[name]
    shape = {w[1]: w[3] for w in WEIGHTED}[name]
    float_mod = make()
    ours_qp, theirs_qp = _qparams(fxquant.default_per_channel_weight_observer,
                                  tq.default_per_channel_weight_observer, float_mod.weight, False, False)
    ours = getattr(ref, name).from_float(float_mod, ours_qp)
    theirs = getattr(up_ref, name).from_float(float_mod, theirs_qp)
    x = torch.randn(shape)
    # fresh modules start per tensor; the saved per-channel qparams replace that
    fresh_theirs = getattr(up_ref, name).from_float(make(), get_qparam_dict(_seen(tq.default_per_channel_weight_observer(), float_mod.weight)))
    fresh_theirs.load_state_dict(ours.state_dict())
    assert torch.equal(fresh_theirs(x), theirs(x))
    fresh_ours = getattr(ref, name).from_float(make(), None)
    fresh_ours.load_state_dict(save_load(theirs.state_dict(), weights_only=True))
    assert fresh_ours.weight_qscheme == torch.per_channel_affine
    assert torch.equal(fresh_ours(x), ours(x))
    assert torch.equal(save_load(ours, weights_only=False)(x), ours(x))


def _seen(observer, weight):
    observer(weight)
    return observer


def test_reflect_padding_is_applied_to_the_reference_conv():
    # upstream's reference Conv2d ignores padding_mode (it always zero-pads); fxquant runs the
    # float conv's own padding, so the reference module equals the float conv on the q/dq weight
    float_conv = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    qparams = weight_qparams_from_observer(_seen(fxquant.default_weight_observer(), float_conv.weight))
    ours = ref.Conv2d.from_float(float_conv, qparams)
    x = torch.randn(1, 3, 5, 5)
    expected = float_conv._conv_forward(x, ours.get_weight(), float_conv.bias)
    assert torch.equal(ours(x), expected)


def test_transposed_output_size_is_honoured():
    float_conv = torch.nn.ConvTranspose2d(4, 6, 3, stride=2)
    qparams = weight_qparams_from_observer(_seen(fxquant.default_weight_observer(), float_conv.weight))
    ours = ref.ConvTranspose2d.from_float(float_conv, qparams)
    x = torch.randn(1, 4, 5, 5)
    assert ours(x, output_size=[12, 12]).shape[-2:] == (12, 12)


BITS = [
    pytest.param(fxquant.default_float_qparams_observer, tq.default_float_qparams_observer, id="8bit"),
    pytest.param(fxquant.default_float_qparams_observer_4bit, tq.default_float_qparams_observer_4bit, id="4bit"),
]


@pytest.mark.parametrize(("ours_ctor", "theirs_ctor"), BITS)
def test_reference_embeddings_match_upstream(ours_ctor, theirs_ctor):
    emb, bag = torch.nn.Embedding(30, 8), torch.nn.EmbeddingBag(30, 8, mode="sum")
    indices, offsets = torch.randint(0, 30, (10,)), torch.tensor([0, 4])
    for float_mod, name in ((emb, "Embedding"), (bag, "EmbeddingBag")):
        ours_qp = weight_qparams_from_observer(_seen(ours_ctor(), float_mod.weight))
        theirs_qp = get_qparam_dict(_seen(theirs_ctor(), float_mod.weight))
        ours = getattr(ref, name).from_float(float_mod, ours_qp)
        theirs = getattr(up_ref, name).from_float(float_mod, theirs_qp)
        args = (indices,) if name == "Embedding" else (indices, offsets)
        assert torch.equal(ours(*args), theirs(*args))
        assert_same_state_dict(ours.state_dict(), theirs.state_dict())


def test_weight_qparams_from_placeholder_is_float():
    assert weight_qparams_from_observer(fxquant.PlaceholderObserver(dtype=torch.float16)) == {
        "qscheme": None, "dtype": torch.float16,
    }


def test_float16_reference_linear_keeps_float_weight():
    ours = ref.Linear(4, 3, weight_qparams={"qscheme": None, "dtype": torch.float16})
    assert ours.get_weight() is ours.weight
    assert ours.get_quantized_weight().dtype == torch.float16


def test_unsupported_qscheme_is_rejected():
    with pytest.raises(ValueError, match="qscheme"):
        ref.Linear(4, 3, weight_qparams={"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8,
                                         "scale": 1.0, "zero_point": 0})
