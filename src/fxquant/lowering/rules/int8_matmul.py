"""Rule for attention whose two batched matmuls were quantized (the X86 quantizer's opt-in
``set_function_type_qconfig(torch.matmul, config)``): both products on int8 GEMMs.

* ``int8_attention``: ``q(matmul(dq(q(softmax(matmul(dq a, dq bᵀ) · c [+ mask]))), dq v))`` ->
  :func:`int8_attention` (int32 products by ``torch._int_mm``, the softmax in float between
  them, the probabilities quantized as the reference quantizes them).

The products run on the integers: a ``quint8`` value ``x`` with zero point ``z`` is read as the
``int8`` value ``x' = x - 128`` (one XOR of its bytes), and the zero points come back as row
and column sums: ``Σ (x - zx)(y - zy) = Σ x'y' + (128 - zy) Σ x' + (128 - zx) Σ y' + n (128 -
zx)(128 - zy)``. Before the softmax the terms constant along a row cancel (softmax is invariant
to them), so only the key's column sums are added, folded into the mask. ``torch._int_mm`` is
2-d: the heads are a loop of GEMMs, in chunks whose scores stay in a core's L2 cache.

Numerics: the products are exact in int32 (the reference computes them in float32 on integer
multiples of the scales); the scaling and the softmax are float32 in another order, so the
probabilities and the output land within one quantization step of the reference's.

Not in the default table (:mod:`fxquant.lowering.table`): measured on MiniLM-L6 (128 tokens,
1 thread, ``benchmarks/int8_attention.py``) the default recipe's fused float attention
(:mod:`fxquant.lowering.rules.matmul`) is faster, by ~10% per layer at batch 8 and ~30% at
batch 1. The int8 GEMMs themselves are cheap (~3 us per head in a tight loop), but eager
int8 attention still writes the ``[heads, L, L]`` scores and makes separate passes for their
int32 -> float scaling, the softmax, the probability quantize and a row sum, which the fused
float kernel never materialises, and pays a Python-level call per head and product. Pass
``rules=(*INT8_RULES, *INT8_MATMUL_RULES)`` to :func:`fxquant.lowering.lower_to_int8` to use it
on a graph whose matmuls were quantized.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import QTensorMeta, qmeta, set_qmeta
from fxquant.lowering.kernels import int_view
from fxquant.lowering.rule import LoweringRule, Match, dequantized_input, sole_user_is
from fxquant.lowering.rules.matmul import mask_splits, scaled_by, softmax_input

__all__ = ["INT8_MATMUL_RULES", "int8_attention", "int8_batched_matmul", "int8_integers"]

A = torch.ops.aten
_QUANTIZED = (torch.quint8, torch.qint8)


_CHUNK_BYTES = 1 << 20  # int32 scores per chunk of heads: stays in a core's L2 cache


def int8_integers(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(i, offset)`` with ``i`` an ``int8`` tensor of ``x``'s stored integers minus
    ``offset`` (128 for ``torch.quint8``, 0 for ``torch.qint8``; ``x``'s strides), so that
    ``x``'s value is ``scale · (i + offset - zero_point)``."""
    if x.dtype == torch.quint8:
        stored = int_view(x)
        shifted = torch.empty_like(stored)  # same strides: one pass in memory order
        torch.bitwise_xor(stored, 128, out=shifted)  # u ^ 0x80 read as int8 is u - 128
        return shifted.view(torch.int8), 128
    if x.dtype == torch.qint8:
        return int_view(x), 0
    raise TypeError(f"int8_integers expects a torch.quint8 or torch.qint8 tensor, got {x.dtype}")


def _int_mm_each(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out[i] = a[i] @ b[i]`` for 3-d int8 ``a``, ``b`` and int32 ``out`` (one GEMM each)."""
    mm = torch._int_mm
    for x, y, z in zip(a.unbind(0), b.unbind(0), out.unbind(0), strict=True):
        mm(x, y, out=z)


def _flat(x: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """``x`` broadcast to the batch dimensions ``batch`` and flattened to 3-d."""
    return x.expand(*batch, *x.shape[-2:]).reshape(-1, *x.shape[-2:])


def int8_batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in int32 for ``int8`` tensors with (broadcastable) batch dimensions, one
    ``torch._int_mm`` per matrix."""
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out = torch.empty(*batch, a.shape[-2], b.shape[-1], dtype=torch.int32)
    _int_mm_each(_flat(a, batch), _flat(b, batch), out.view(-1, *out.shape[-2:]))
    return out


def int8_attention(
    query: torch.Tensor, key_t: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
    scale: float, probs_scale: float, probs_zero_point: int, probs_dtype: torch.dtype,
    out_scale: float, out_zero_point: int, out_dtype: torch.dtype,
) -> torch.Tensor:
    """``q(dq(q(softmax(c · dq(query) @ dq(key_t) + mask))) @ dq(value))`` for quantized
    ``query [.., L, D]``, ``key_t [.., D, S]`` and ``value [.., S, E]`` (``torch.quint8`` or
    ``torch.qint8``): the probabilities quantized with ``probs_*`` and the result with
    ``out_*`` (a quantized tensor), as the converted graph quantizes them.

    Heads are processed in chunks whose scores fit in a core's L2 cache (the int32 products,
    their float scaling, the softmax and its quantize then never go to memory)."""
    probs = QTensorMeta(scale=probs_scale, zero_point=probs_zero_point, dtype=probs_dtype)
    q8, q_off = int8_integers(query)
    k8, _ = int8_integers(key_t)  # its zero point only adds terms constant along a row
    v8, v_off = int8_integers(value)
    batch = torch.broadcast_shapes(q8.shape[:-2], k8.shape[:-2], v8.shape[:-2])
    q3, k3, v3 = _flat(q8, batch), _flat(k8, batch), _flat(v8, batch)
    heads, length, keys = q3.shape[0], q3.shape[1], k3.shape[2]
    alpha = scale * query.q_scale() * key_t.q_scale()
    bias = _score_bias(k3, q_off - query.q_zero_point(), alpha, mask, batch)
    p_off = 128 if probs.dtype == torch.quint8 else 0
    v_shift = v_off - value.q_zero_point()
    acc = torch.empty(*batch, length, v3.shape[2], dtype=torch.int32)
    acc3 = acc.view(heads, length, -1)
    chunk = max(1, min(heads, _CHUNK_BYTES // (4 * length * keys)))
    buffer = torch.empty(chunk, length, keys, dtype=torch.int32)
    for start in range(0, heads, chunk):
        part = slice(start, min(start + chunk, heads))
        products = buffer[: part.stop - start]
        _int_mm_each(q3[part], k3[part], products)
        scores = torch.mul(products, alpha)  # int32 -> float32, scaled
        if bias is not None:
            scores.add_(bias if bias.dim() < 3 or bias.shape[0] != heads else bias[part])
        # quantized as qint8 with the zero point moved by the offset: the int8 integers i directly
        p8 = int_view(torch.quantize_per_tensor(
            torch.softmax(scores, -1), probs.scale, probs.zero_point - p_off, torch.qint8))
        _int_mm_each(p8, v3[part], acc3[part])
        if v_shift:
            acc3[part].add_(p8.sum(-1, keepdim=True, dtype=torch.int32).mul_(v_shift))
    p_shift = p_off - probs.zero_point
    if p_shift:
        acc.add_(v8.sum(-2, keepdim=True, dtype=torch.int32).mul_(p_shift).add_(keys * p_shift * v_shift))
    result = acc.to(torch.float32).mul_(probs.scale * value.q_scale())
    return torch.quantize_per_tensor(result, out_scale, out_zero_point, out_dtype)


def _score_bias(
    k3: torch.Tensor, q_shift: int, alpha: float, mask: torch.Tensor | None, batch: torch.Size
) -> torch.Tensor | None:
    """What is added to the scaled int8 products of the scores: the key's column sums times
    the query's zero-point shift (the terms constant along a row cancel in the softmax), and
    the mask; ``[heads, 1 or L, S]`` or a mask of 2 dims, or None."""
    bias = k3.sum(-2, keepdim=True, dtype=torch.int32).mul(alpha * q_shift) if q_shift else None
    if mask is None:
        return bias
    if mask.dim() > 2:
        mask = _flat(mask, batch)
    return mask if bias is None else bias + mask


def _quantized_operand(node: object, user: Node) -> Node | None:
    """``x`` of ``dq(x)`` read by ``user`` only, with ``x`` a per-tensor quint8/qint8 value."""
    if not sole_user_is(node, user):
        return None
    x = dequantized_input(node)
    meta = qmeta(x)
    return x if meta is not None and meta.dtype in _QUANTIZED else None


def _val(node: object) -> torch.Tensor | None:
    value = node.meta.get("val") if isinstance(node, Node) else None
    return value if isinstance(value, torch.Tensor) else None


def _match_int8_attention(node: Node, gm: GraphModule) -> Match | None:
    out, pv = qmeta(node), node.args[0]
    if out is None or out.dtype not in _QUANTIZED or not isinstance(pv, Node):
        return None
    if pv.target != A.matmul.default or len(pv.args) != 2 or not sole_user_is(pv, node):
        return None
    pq, value = _quantized_operand(pv.args[0], pv), _quantized_operand(pv.args[1], pv)
    probs_meta = qmeta(pq)
    if pq is None or value is None or probs_meta is None or probs_meta.dtype not in _QUANTIZED:
        return None
    if pq.target != A.quantize_per_tensor.default or len(pq.users) != 1:
        return None
    probs = pq.args[0]
    scores = softmax_input(probs)
    if not isinstance(probs, Node) or scores is None:
        return None
    if not sole_user_is(probs, pq) or not sole_user_is(scores, probs):
        return None
    for masked, mask in mask_splits(scores):
        s, scale = scaled_by(masked)
        if s.target != A.matmul.default or len(s.args) != 2:
            continue
        query, key_t = (_quantized_operand(x, s) for x in s.args)
        s_val, scores_val, pv_val = _val(s), _val(scores), _val(pv)
        if query is None or key_t is None or s_val is None or scores_val is None or pv_val is None:
            return None
        if s_val.dim() < 2 or scores_val.shape != s_val.shape or pv_val.dtype != torch.float32:
            return None  # the mask broadcast the scores to a larger shape
        return {"query": query, "key_t": key_t, "value": value, "mask": mask,
                "scale": 1.0 if scale is None else scale, "probs": probs_meta}
    return None


def _rewrite_int8_attention(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None  # checked by the match
    probs: QTensorMeta = m["probs"]
    new = gm.graph.call_function(int8_attention, (
        m["query"], m["key_t"], m["value"], m["mask"], m["scale"],
        probs.scale, probs.zero_point, probs.dtype, out.scale, out.zero_point, out.dtype))
    return set_qmeta(new, out)


INT8_MATMUL_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="int8_attention", anchors=frozenset({A.quantize_per_tensor.default}),
                 match=_match_int8_attention, rewrite=_rewrite_int8_attention, exact=False,
                 doc="q(matmul(dq q(softmax(matmul(dq q, dq kT) * c [+ mask])), dq v)) -> int8 GEMMs"),
)
