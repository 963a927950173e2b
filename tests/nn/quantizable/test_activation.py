"""Quantizable / quantized MultiheadAttention against ``torch.ao.nn.quantizable`` /
``torch.ao.nn.quantized``: same structure, state-dict keys and float outputs, and the eager
flow float -> observed -> quantized bit-exact with upstream's (same kernels). Where upstream
is wrong (batch_first, dequantize with biases, bias_v's qparams) the reference is the float
``nn.MultiheadAttention``."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.nn.quantizable as tnnqa
import torch.ao.quantization as tq
from helpers import assert_sqnr
from torch import nn

import fxquant
import fxquant.nn.quantizable as nnqa
from fxquant.eager import mappings
from fxquant.nn.quantizable.quantized_activation import MultiheadAttention as QuantizedMHA

E, H, L, S, N = 8, 2, 5, 6, 3

LAYOUTS = {
    "default": {},
    "no_bias": {"bias": False},
    "bias_kv": {"add_bias_kv": True},
    "zero_attn": {"add_zero_attn": True},
    "kdim_vdim": {"kdim": 4, "vdim": 6},
    "dropout": {"dropout": 0.1},
}


def _qkv(kwargs: dict, batch_first: bool = False) -> tuple[torch.Tensor, ...]:
    q = torch.randn(L, N, E)
    k = torch.randn(S, N, kwargs.get("kdim", E))
    v = torch.randn(S, N, kwargs.get("vdim", E))
    if batch_first:
        return tuple(t.transpose(0, 1).contiguous() for t in (q, k, v))
    return q, k, v


def _float_mha(**kwargs) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(E, H, **kwargs)
    with torch.no_grad():  # non-zero biases everywhere
        for name, p in mha.named_parameters():
            if "bias" in name:
                p.normal_()
    return mha.eval()


def _bool_mask() -> torch.Tensor:
    # its own generator (module-level draws from the global one depend on the import order of
    # the test session), and no query masked out entirely (that row's softmax would be NaN)
    mask = torch.rand(L, S, generator=torch.Generator().manual_seed(0)) > 0.7
    mask[:, 0] = False
    return mask


MASKS = {
    "none": {},
    "bool_attn_mask": {"attn_mask": _bool_mask()},
    "float_3d_attn_mask": {"attn_mask": torch.randn(N * H, L, S, generator=torch.Generator().manual_seed(1))},
    "key_padding_mask": {"key_padding_mask": torch.tensor([[False] * (S - 1) + [True]] * N)},
    "per_head_weights": {"average_attn_weights": False},
    "no_weights": {"need_weights": False},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_structure_and_float_outputs_match_upstream(layout):
    kwargs = LAYOUTS[layout]
    ours, theirs = nnqa.MultiheadAttention(E, H, **kwargs), tnnqa.MultiheadAttention(E, H, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert repr(ours) == repr(theirs)
    ours.eval()
    theirs.eval()
    for mask_name, mask in MASKS.items():
        q, k, v = _qkv(kwargs)
        out_ours, w_ours = ours(q, k, v, **mask)
        out_theirs, w_theirs = theirs(q, k, v, **mask)
        assert torch.equal(out_ours, out_theirs), mask_name
        assert (w_ours is None and w_theirs is None) or torch.equal(w_ours, w_theirs), mask_name


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_from_float_computes_the_float_module(layout):
    kwargs = LAYOUTS[layout]
    float_mha = _float_mha(**kwargs)
    float_mha.qconfig = fxquant.default_qconfig
    observed = nnqa.MultiheadAttention.from_float(float_mha)
    assert not observed.training
    assert all(hasattr(m, "activation_post_process") for m in
               (observed.linear_Q, observed.linear_K, observed.linear_V, observed.out_proj))
    q, k, v = _qkv(kwargs)
    for mask in MASKS.values():
        want, want_w = float_mha(q, k, v, **mask)
        got, got_w = observed(q, k, v, **mask)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        if want_w is not None:
            torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-5)


def test_batch_first_computes_the_float_module_where_upstream_does_not():
    float_mha = _float_mha(batch_first=True)
    float_mha.qconfig = fxquant.default_qconfig
    ours = nnqa.MultiheadAttention.from_float(float_mha)
    theirs = tq.prepare(_upstream_wrapper(copy.deepcopy(float_mha))).mha
    q, k, v = _qkv({}, batch_first=True)
    want, _ = float_mha(q, k, v)
    torch.testing.assert_close(ours(q, k, v)[0], want, atol=1e-6, rtol=1e-5)
    assert (theirs(q, k, v)[0] - want).abs().max() > 0.1  # upstream mixes heads and positions


# ---- the eager flow: float -> observed -> quantized ----------------------------------------


class _Wrapper(nn.Module):
    def __init__(self, mha: nn.Module, quant: type, dequant: type) -> None:
        super().__init__()
        self.quant_q, self.quant_k, self.quant_v = quant(), quant(), quant()
        self.mha = mha
        self.dequant_out, self.dequant_weights = dequant(), dequant()

    def forward(self, q, k, v, **kwargs):
        out, weights = self.mha(self.quant_q(q), self.quant_k(k), self.quant_v(v), **kwargs)
        return self.dequant_out(out), None if weights is None else self.dequant_weights(weights)


def _upstream_wrapper(mha: nn.Module) -> nn.Module:
    model = _Wrapper(mha, tq.QuantStub, tq.DeQuantStub).eval()
    model.qconfig = tq.default_qconfig
    return model


def test_default_custom_config_maps_attention_like_upstream():
    default = fxquant.get_default_custom_config_dict()
    assert default["float_to_observed_custom_module_class"][nn.MultiheadAttention] is nnqa.MultiheadAttention
    assert default["observed_to_quantized_custom_module_class"][nnqa.MultiheadAttention] is QuantizedMHA
    assert nnqa.MultiheadAttention in mappings.no_observer_set()
    assert fxquant.nn.quantized.MultiheadAttention is QuantizedMHA




def _quantized_pair(kwargs: dict) -> tuple[nn.Module, nn.Module]:
    float_mha = _float_mha(**kwargs)
    ours = _Wrapper(copy.deepcopy(float_mha), fxquant.QuantStub, fxquant.DeQuantStub).eval()
    ours.qconfig = fxquant.default_qconfig
    ours = fxquant.prepare(ours)
    theirs = tq.prepare(_upstream_wrapper(copy.deepcopy(float_mha)))
    assert type(ours.mha) is nnqa.MultiheadAttention
    assert not hasattr(ours.mha, "activation_post_process")  # it observes inside
    for _ in range(3):
        batch = _qkv(kwargs)
        ours(*batch), theirs(*batch)
    return (fxquant.convert(ours), tq.convert(theirs))


@pytest.mark.parametrize("layout", ["default", "no_bias", "zero_attn", "kdim_vdim", "dropout"])
def test_quantized_flow_is_bit_exact_with_upstream(layout):
    ours, theirs = _quantized_pair(LAYOUTS[layout])
    assert (ours.mha.q_scaling_product.scale, ours.mha.q_scaling_product.zero_point) == (
        theirs.mha.q_scaling_product.scale, theirs.mha.q_scaling_product.zero_point)
    assert type(ours.mha) is QuantizedMHA and repr(ours.mha).startswith("QuantizedMultiheadAttention(")
    assert isinstance(ours.mha.linear_Q, fxquant.nn.quantized.Linear)
    q, k, v = _qkv(LAYOUTS[layout])
    for mask_name, mask in MASKS.items():
        out_ours, w_ours = ours(q, k, v, **mask)
        out_theirs, w_theirs = theirs(q, k, v, **mask)
        assert torch.equal(out_ours, out_theirs), mask_name
        assert (w_ours is None and w_theirs is None) or torch.equal(w_ours, w_theirs), mask_name


def test_quantized_bias_kv_uses_its_own_range():
    ours, theirs = _quantized_pair(LAYOUTS["bias_kv"])
    bias_k, bias_v = ours.mha.bias_k, ours.mha.bias_v
    assert bias_k.dtype == bias_v.dtype == torch.quint8
    assert torch.equal(bias_k.int_repr(), theirs.mha.bias_k.int_repr())  # as upstream
    assert bias_k.q_scale() == theirs.mha.bias_k.q_scale()
    # bias_v: quantized with the parameters of its own range, so it round-trips to a step
    float_v = nnqa.MultiheadAttention.dequantize(ours.mha).bias_v
    assert (bias_v.dequantize() - float_v).abs().max() <= bias_v.q_scale()
    expected_scale, _ = torch._choose_qparams_per_tensor(float_v, reduce_range=False)
    assert bias_v.q_scale() == pytest.approx(expected_scale)
    assert "in_proj_weight" not in dict(ours.mha.named_parameters())
    # keys (bias_k rows requantized to the keys' grid, as upstream's cat does) are equal
    mha_ours, mha_theirs = ours.mha, theirs.mha
    q, k, v = _qkv({})
    keys = [torch.quantize_per_tensor(k, 0.05, 128, torch.quint8)]
    for mha in (mha_ours, mha_theirs):
        mha.dequant_k = _Record(mha.dequant_k, keys)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mha_ours(*[torch.quantize_per_tensor(t, 0.05, 128, torch.quint8) for t in (q, k, v)])
    assert not [w for w in caught if "cat operator" in str(w.message)]  # requantized first
    mha_theirs(*[torch.quantize_per_tensor(t, 0.05, 128, torch.quint8) for t in (q, k, v)])
    assert torch.equal(keys[1].int_repr(), keys[2].int_repr())
    assert_sqnr(theirs(q, k, v)[0], ours(q, k, v)[0], min_db=25)


class _Record(nn.Module):
    def __init__(self, inner: nn.Module, seen: list) -> None:
        super().__init__()
        self.inner, self.seen = inner, seen

    def forward(self, x):
        self.seen.append(x)
        return self.inner(x)


@pytest.mark.parametrize("layout", ["default", "kdim_vdim", "bias_kv"])
def test_dequantize_gives_a_float_module_computing_the_quantized_weights(layout):
    kwargs = LAYOUTS[layout]
    ours, _ = _quantized_pair(kwargs)
    fp = ours.mha.dequantize()
    assert type(fp) is nn.MultiheadAttention and not fp.training
    w_q, b_q = ours.mha.linear_Q._weight_bias()
    if fp._qkv_same_embed_dim:
        assert torch.equal(fp.in_proj_weight[:E], w_q.dequantize())
    else:
        assert torch.equal(fp.q_proj_weight, w_q.dequantize())
    assert torch.equal(fp.in_proj_bias[:E], b_q)
    q, k, v = _qkv(kwargs)
    assert_sqnr(fp(q, k, v)[0], ours(q, k, v)[0], min_db=25)


def test_errors_name_the_problem():
    with pytest.raises(nnqa.QuantizableModuleError, match="converts nn.MultiheadAttention"):
        nnqa.MultiheadAttention.from_float(nn.Linear(2, 2))
    with pytest.raises(nnqa.QuantizableModuleError, match="no qconfig"):
        nnqa.MultiheadAttention.from_float(nn.MultiheadAttention(E, H))
    with pytest.raises(NotImplementedError, match="prepare the float model"):
        QuantizedMHA.from_float(nn.MultiheadAttention(E, H))
    with pytest.raises(nnqa.QuantizableModuleError, match="from_observed converts"):
        QuantizedMHA.from_observed(nn.MultiheadAttention(E, H))
    with pytest.raises(NotImplementedError):
        nnqa.MultiheadAttention.from_observed(nnqa.MultiheadAttention(E, H))
    mha = nnqa.MultiheadAttention(E, H)
    q, k, v = _qkv({})
    with pytest.raises(nnqa.MultiheadAttentionInputError, match="attn_mask"):
        mha(q, k, v, is_causal=True)
    with pytest.raises(nnqa.MultiheadAttentionInputError, match=r"expected \(1, 5, 6\)"):
        mha(q, k, v, attn_mask=torch.zeros(L, L))
    with pytest.raises(nnqa.MultiheadAttentionInputError, match="embed_dim=8"):
        mha(torch.randn(L, N, 4), k, v)
    with pytest.raises(AssertionError):  # upstream's exception type still catches it
        mha(q, k, v, key_padding_mask=torch.zeros(N, S + 1, dtype=torch.bool))
