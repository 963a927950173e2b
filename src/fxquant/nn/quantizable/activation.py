"""Quantizable (observable) multi-head attention: ``nn.MultiheadAttention`` with its input
and output projections as separate ``nn.Linear`` layers, so eager quantization can observe
and convert them. Mirrors ``torch.ao.nn.quantizable.MultiheadAttention``.

``nn.MultiheadAttention`` keeps the query/key/value projections in one packed
``in_proj_weight`` and calls a fused functional, which ``prepare`` cannot see into. Here::

    q = linear_Q(query) * head_dim ** -0.5      (q_scaling_product.mul_scalar)
    k = linear_K(key); v = linear_V(value)       [+ bias_k / bias_v rows, + a zero row]
    --- dequantized (dequant_q / dequant_k / dequant_v): the attention itself runs in float
    weights = softmax(q k^T + mask), dropout;  heads = weights v
    --- re-quantized (quant_attn_output / quant_attn_output_weights)
    out = out_proj(heads)

After ``convert`` the four projections are quantized linears and the scaling a quantized
``mul_scalar`` (:class:`fxquant.nn.quantizable.quantized_activation.MultiheadAttention`).

Differences from upstream, all where upstream is wrong: ``batch_first=True`` gathers the
heads back per batch element (upstream reshapes without moving the head axis and mixes
heads and positions, so its output differs from ``nn.MultiheadAttention``);
:meth:`~MultiheadAttention.dequantize` works with biases and for the packed layout (upstream
asserts the biases are zero and writes in place into a leaf parameter that requires grad);
``from_float`` copies the weights instead of sharing slices of the float module's packed
parameter.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fxquant.eager.stubs import DeQuantStub, QuantStub
from fxquant.nn.quantizable.rnn import QuantizableModuleError
from fxquant.nn.quantized.functional_modules import FloatFunctional

__all__ = ["MultiheadAttention", "MultiheadAttentionInputError"]

_NO_CUSTOM_MODULES: dict[str, dict[Any, Any]] = {"float_to_observed_custom_module_class": {}}


class MultiheadAttentionInputError(ValueError, AssertionError):
    """Inputs the quantizable attention cannot take (also an ``AssertionError``, which is
    what upstream raises)."""


class MultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` made of observable parts (same constructor arguments).

    Built by ``prepare`` from a float ``nn.MultiheadAttention`` through :meth:`from_float`
    (with the default custom-module configuration), or directly. Static key/value inputs and
    ``is_causal`` are not supported (pass an explicit ``attn_mask``).

    >>> mha = MultiheadAttention(embed_dim=16, num_heads=4)
    >>> out, weights = mha(query, key, value)
    """

    _FLOAT_MODULE: type[nn.Module] = nn.MultiheadAttention

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__(
            embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim,
            batch_first, **factory_kwargs,
        )  # fmt: skip
        self.linear_Q = nn.Linear(self.embed_dim, self.embed_dim, bias=bias, **factory_kwargs)
        self.linear_K = nn.Linear(self.kdim, self.embed_dim, bias=bias, **factory_kwargs)
        self.linear_V = nn.Linear(self.vdim, self.embed_dim, bias=bias, **factory_kwargs)
        # a plain Linear (the float module's is NonDynamicallyQuantizableLinear)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias, **factory_kwargs)  # type: ignore[assignment]  # narrower class in nn.MultiheadAttention
        self.q_scaling_product = FloatFunctional()
        self.quant_attn_output = QuantStub()
        self.quant_attn_output_weights = QuantStub()
        self.dequant_q = DeQuantStub()
        self.dequant_k = DeQuantStub()
        self.dequant_v = DeQuantStub()

    def _get_name(self) -> str:
        return "QuantizableMultiheadAttention"

    # ---- float <-> observed -------------------------------------------------------------

    @classmethod
    def from_float(cls, other: nn.Module, qconfig: Any = None) -> Any:
        """The observed attention of a float ``nn.MultiheadAttention``: the packed projections
        split into ``linear_Q/K/V``, then ``prepare`` d (eval mode) with ``other.qconfig`` (or
        ``qconfig``)."""
        if type(other) is not cls._FLOAT_MODULE:
            raise QuantizableModuleError(
                f"{cls.__name__}.from_float converts nn.MultiheadAttention, got "
                f"{type(other).__name__}"
            )
        assert isinstance(other, nn.MultiheadAttention)
        qconfig = getattr(other, "qconfig", qconfig)
        if qconfig is None:
            raise QuantizableModuleError(
                f"{cls.__name__}.from_float: the attention has no qconfig; set module.qconfig "
                "or pass qconfig="
            )
        observed = cls(
            other.embed_dim, other.num_heads, other.dropout, other.in_proj_bias is not None,
            other.bias_k is not None, other.add_zero_attn, other.kdim, other.vdim,
            other.batch_first,
        )  # fmt: skip
        observed.qconfig = qconfig
        observed.bias_k = _copy_param(other.bias_k)
        observed.bias_v = _copy_param(other.bias_v)
        _copy_linear(observed.out_proj, other.out_proj.weight, other.out_proj.bias)
        weights = _split_projections(other)
        biases = _split_bias(other.in_proj_bias, other.embed_dim)
        for linear, weight, bias in zip(observed._projections(), weights, biases):
            _copy_linear(linear, weight, bias)
        observed.eval()
        # eager mode's prepare is above this package; import it where it is needed
        from fxquant.eager import prepare

        # nothing inside is a custom module: observe the parts as they are
        return prepare(observed, inplace=True, prepare_custom_config_dict=_NO_CUSTOM_MODULES)

    @classmethod
    def from_observed(cls, other: Any) -> Any:
        raise NotImplementedError(
            "the quantizable MultiheadAttention only goes float -> observed; convert an "
            "observed one with the quantized MultiheadAttention's from_observed (convert() "
            "does it)"
        )

    def dequantize(self) -> nn.MultiheadAttention:
        """A float ``nn.MultiheadAttention`` computing what this module computes with its
        (dequantized) weights; works on the observed and on the converted module."""
        q_w, q_b = _weight_bias(self.linear_Q)
        k_w, k_b = _weight_bias(self.linear_K)
        v_w, v_b = _weight_bias(self.linear_V)
        out_w, out_b = _weight_bias(self.out_proj)
        fp = nn.MultiheadAttention(
            self.embed_dim, self.num_heads, self.dropout, q_b is not None, self.bias_k is not None,
            self.add_zero_attn, self.kdim, self.vdim, self.batch_first,
        )  # fmt: skip
        with torch.no_grad():
            if fp._qkv_same_embed_dim:
                fp.in_proj_weight.copy_(torch.cat([q_w, k_w, v_w]))
            else:
                fp.q_proj_weight.copy_(q_w)
                fp.k_proj_weight.copy_(k_w)
                fp.v_proj_weight.copy_(v_w)
            if fp.in_proj_bias is not None:
                assert q_b is not None and k_b is not None and v_b is not None
                fp.in_proj_bias.copy_(torch.cat([q_b, k_b, v_b]))
            fp.out_proj.weight.copy_(out_w)
            if fp.out_proj.bias is not None and out_b is not None:
                fp.out_proj.bias.copy_(out_b)
            for name in ("bias_k", "bias_v"):
                value = getattr(self, name)
                if value is not None:
                    getattr(fp, name).copy_(value.dequantize() if value.is_quantized else value)
        return fp.train(self.training)

    def _projections(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.linear_Q, self.linear_K, self.linear_V

    # ---- forward ------------------------------------------------------------------------

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """As ``nn.MultiheadAttention.forward``: ``(attn_output, attn_weights or None)``.
        After ``convert``, ``query``/``key``/``value`` must be quantized tensors and both
        outputs are quantized."""
        if is_causal:
            raise MultiheadAttentionInputError(
                f"{self._get_name()} does not support is_causal=True; pass the causal mask as "
                "attn_mask (torch.nn.Transformer.generate_square_subsequent_mask)"
            )
        if self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        tgt_len, bsz, embed_dim = query.size()
        self._check_shapes(embed_dim, key, value)
        head_dim = self.embed_dim // self.num_heads

        q = self.q_scaling_product.mul_scalar(self.linear_Q(query), float(head_dim) ** -0.5)
        k = self.linear_K(key)
        v = self.linear_V(value)
        attn_mask = _checked_attn_mask(attn_mask, bsz * self.num_heads, tgt_len, key.size(0))
        if key_padding_mask is not None and key_padding_mask.dtype == torch.uint8:
            warnings.warn(
                "Byte tensor for `key_padding_mask` in `nn.MultiheadAttention` is deprecated. "
                "Use bool tensor instead.",
                stacklevel=2,
            )
            key_padding_mask = key_padding_mask.to(torch.bool)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, _quantized_like(self.bias_k, k).repeat(1, bsz, 1)])
            v = torch.cat([v, _quantized_like(self.bias_v, v).repeat(1, bsz, 1)])
            attn_mask = _pad_last(attn_mask)
            key_padding_mask = _pad_last(key_padding_mask)

        heads = bsz * self.num_heads
        q = q.contiguous().view(tgt_len, heads, head_dim).transpose(0, 1)
        k = k.contiguous().view(-1, heads, head_dim).transpose(0, 1)
        v = v.contiguous().view(-1, heads, head_dim).transpose(0, 1)
        src_len = k.size(1)
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (bsz, src_len):
            raise MultiheadAttentionInputError(
                f"{self._get_name()}: key_padding_mask has shape "
                f"{tuple(key_padding_mask.shape)}, expected (batch, source length) = "
                f"({bsz}, {src_len})"
            )
        if self.add_zero_attn:
            src_len += 1
            k = torch.cat([k, _zeros_like_row(k)], dim=1)
            v = torch.cat([v, _zeros_like_row(v)], dim=1)
            attn_mask = _pad_last(attn_mask)
            key_padding_mask = _pad_last(key_padding_mask)

        # the attention runs in float
        q, k, v = self.dequant_q(q), self.dequant_k(k), self.dequant_v(v)
        weights = torch.bmm(q, k.transpose(1, 2))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                weights.masked_fill_(attn_mask, float("-inf"))
            else:
                weights += attn_mask
        if key_padding_mask is not None:
            weights = weights.view(bsz, self.num_heads, tgt_len, src_len).masked_fill(
                key_padding_mask.unsqueeze(1).unsqueeze(2), float("-inf")
            ).view(heads, tgt_len, src_len)
        weights = F.softmax(weights, dim=-1)
        weights = F.dropout(weights, p=self.dropout, training=self.training)
        attn_output = torch.bmm(weights, v)  # (batch * heads, tgt_len, head_dim)
        attn_output = attn_output.transpose(0, 1).contiguous().view(tgt_len, bsz, self.embed_dim)
        if self.batch_first:
            attn_output = attn_output.transpose(0, 1)

        # back to the quantized domain
        attn_output = self.out_proj(self.quant_attn_output(attn_output))
        weights = self.quant_attn_output_weights(weights)
        if not need_weights:
            return attn_output, None
        weights = weights.view(bsz, self.num_heads, tgt_len, src_len)
        return attn_output, weights.mean(dim=1) if average_attn_weights else weights

    def _check_shapes(self, embed_dim: int, key: Tensor, value: Tensor) -> None:
        name = self._get_name()
        if embed_dim != self.embed_dim:
            raise MultiheadAttentionInputError(
                f"{name} was built with embed_dim={self.embed_dim} but the query has "
                f"{embed_dim} features"
            )
        if key.shape[:2] != value.shape[:2]:
            raise MultiheadAttentionInputError(
                f"{name}: key {tuple(key.shape)} and value {tuple(value.shape)} must agree in "
                "sequence length and batch size"
            )
        if self.embed_dim % self.num_heads:
            raise MultiheadAttentionInputError(
                f"{name}: embed_dim={self.embed_dim} is not divisible by num_heads="
                f"{self.num_heads}"
            )


# ---- helpers ----------------------------------------------------------------------------


def _checked_attn_mask(mask: Tensor | None, heads: int, tgt_len: int, src_len: int) -> Tensor | None:
    """``attn_mask`` as a 3-D bool or float mask (a 2-D mask gains a leading axis)."""
    if mask is None:
        return None
    if mask.dtype == torch.uint8:
        warnings.warn(
            "Byte tensor for `attn_mask` in `nn.MultiheadAttention` is deprecated. Use bool "
            "tensor instead.",
            stacklevel=3,
        )
        mask = mask.to(torch.bool)
    if not mask.is_floating_point() and mask.dtype != torch.bool:
        raise MultiheadAttentionInputError(
            f"attn_mask must be a float or bool tensor, got {mask.dtype}"
        )
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
        expected = (1, tgt_len, src_len)
    elif mask.dim() == 3:
        expected = (heads, tgt_len, src_len)
    else:
        raise MultiheadAttentionInputError(
            f"attn_mask must be 2-D (target, source) or 3-D (batch * heads, target, source), "
            f"got {mask.dim()}-D"
        )
    if tuple(mask.shape) != expected:
        raise MultiheadAttentionInputError(
            f"attn_mask has shape {tuple(mask.shape)}, expected {expected}"
        )
    return mask


def _pad_last(mask: Tensor | None) -> Tensor | None:
    """One more (unmasked) source position."""
    return None if mask is None else F.pad(mask, (0, 1))


def _quantized_like(rows: Tensor, x: Tensor) -> Tensor:
    """``rows`` on the quantization grid of ``x`` when ``x`` is quantized (what a quantized
    ``cat`` does to inputs with other parameters, without its warning); else unchanged."""
    if not x.is_quantized or not rows.is_quantized:
        return rows
    if (rows.q_scale(), rows.q_zero_point()) == (x.q_scale(), x.q_zero_point()):
        return rows
    return torch.quantize_per_tensor(rows.dequantize(), x.q_scale(), x.q_zero_point(), x.dtype)


def _zeros_like_row(x: Tensor) -> Tensor:
    """A zero row along dim 1 to append to ``x``, quantized like ``x`` if it is quantized."""
    zeros = torch.zeros((x.size(0), 1) + x.size()[2:])
    if x.is_quantized:
        return torch.quantize_per_tensor(zeros, x.q_scale(), x.q_zero_point(), x.dtype)
    return zeros


def _split_projections(mha: nn.MultiheadAttention) -> tuple[Tensor, Tensor, Tensor]:
    """The query, key and value projection weights of a float attention module."""
    if mha._qkv_same_embed_dim:
        assert mha.in_proj_weight is not None
        e = mha.embed_dim
        w = mha.in_proj_weight
        return w[:e], w[e:2 * e], w[2 * e:]
    assert mha.q_proj_weight is not None and mha.k_proj_weight is not None
    assert mha.v_proj_weight is not None
    return mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight


def _split_bias(bias: Tensor | None, embed_dim: int) -> tuple[Tensor | None, ...]:
    if bias is None:
        return None, None, None
    return bias[:embed_dim], bias[embed_dim:2 * embed_dim], bias[2 * embed_dim:]


def _copy_linear(linear: nn.Module, weight: Tensor, bias: Tensor | None) -> None:
    assert isinstance(linear, nn.Linear)
    linear.weight = nn.Parameter(weight.detach().clone(), weight.requires_grad)
    if bias is None:
        linear.bias = None  # type: ignore[assignment]  # Linear allows a missing bias
    else:
        linear.bias = nn.Parameter(bias.detach().clone(), bias.requires_grad)


def _copy_param(param: Tensor | None) -> nn.Parameter | None:
    return None if param is None else nn.Parameter(param.detach().clone(), param.requires_grad)


def _weight_bias(linear: nn.Module) -> tuple[Tensor, Tensor | None]:
    """Float weight and bias of a float or quantized linear."""
    weight_bias = getattr(linear, "_weight_bias", None)
    if callable(weight_bias):
        weight, bias = weight_bias()
        return weight.dequantize(), bias
    assert isinstance(linear, nn.Linear)
    return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
