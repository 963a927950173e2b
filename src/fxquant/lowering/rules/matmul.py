"""Rules for batched matmuls: the float attention block of a quantized transformer.

* ``attention``: ``matmul(softmax(matmul(q, kᵀ) · c [+ mask]), v)`` ->
  ``aten.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=c)``.

A model quantized by the X86 quantizer's default recipe keeps attention in float (only the
linears around it are int8); there the five ops above read and write four ``[B, H, L, L]``
float tensors, and at 128 tokens and batch 8 they cost as much as all the int8 linears. The
fused kernel computes the same attention block by block without materialising the scores
(what Inductor's attention pattern does for a compiled fp32 model). It is float arithmetic in
another order: the output differs from the reference by float rounding (about 1e-6 relative),
so a value quantized after it lands at most one step from the reference's.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.rule import LoweringRule, Match, arg, sole_user_is

__all__ = ["MATMUL_RULES", "mask_splits", "scaled_by", "softmax_input"]

A = torch.ops.aten
_SOFTMAX = frozenset({A.softmax.int, A._softmax.default})
_LAST_TWO = ({-1, -2}, {2, 3})  # the dims a transpose of a 4-d key swaps to give kᵀ


def _val(node: object) -> torch.Tensor | None:
    value = node.meta.get("val") if isinstance(node, Node) else None
    return value if isinstance(value, torch.Tensor) else None


def _is_float32_4d(node: object) -> bool:
    value = _val(node)
    return value is not None and value.dim() == 4 and value.dtype == torch.float32


def softmax_input(node: object) -> Node | None:
    """``x`` of ``softmax(x, -1)`` in float32 (no dtype change), else None."""
    if not isinstance(node, Node) or node.target not in _SOFTMAX:
        return None
    dim = node.args[1] if len(node.args) > 1 else None
    if dim not in (-1, 3):
        return None
    if node.target == A.softmax.int and arg(node, 2, "dtype") is not None:
        return None
    if node.target == A._softmax.default and node.args[2]:  # half_to_float
        return None
    x = node.args[0]
    return x if isinstance(x, Node) else None


def mask_splits(scores: Node) -> list[tuple[Node, Node | None]]:
    """The readings ``(s, mask)`` of ``scores``: ``s + mask`` with a float32 mask either
    way round (the caller keeps the one whose ``s`` is the scaled ``q @ kᵀ``), and
    ``(scores, None)``."""
    splits: list[tuple[Node, Node | None]] = []
    if scores.target == A.add.Tensor and not scores.kwargs and len(scores.args) == 2:
        for i in (0, 1):
            s, mask = scores.args[i], scores.args[1 - i]
            value = _val(mask)
            if (isinstance(s, Node) and isinstance(mask, Node) and sole_user_is(s, scores)
                    and value is not None and value.dtype == torch.float32 and value.dim() <= 4):
                splits.append((s, mask))
    return [*splits, (scores, None)]


def scaled_by(scores: Node) -> tuple[Node, float | None]:
    """``(s, c)`` for ``scores = s * c`` or ``s / (1 / c)`` with a number ``c``."""
    if scores.target not in (A.mul.Tensor, A.div.Tensor, A.mul.Scalar, A.div.Scalar):
        return scores, None
    s, c = scores.args[0], scores.args[1]
    if scores.kwargs or not isinstance(s, Node) or not isinstance(c, (int, float)) or not c:
        return scores, None
    if not sole_user_is(s, scores):
        return scores, None
    return s, float(c) if scores.target in (A.mul.Tensor, A.mul.Scalar) else 1.0 / float(c)


def _key(key_t: object) -> Node | None:
    """``k`` when ``key_t`` is ``k.transpose(-1, -2)``, else None (the rewrite then transposes)."""
    if not isinstance(key_t, Node) or key_t.target != A.transpose.int or len(key_t.args) != 3:
        return None
    key = key_t.args[0]
    return key if {key_t.args[1], key_t.args[2]} in _LAST_TWO and isinstance(key, Node) else None


def _match_attention(node: Node, gm: GraphModule) -> Match | None:
    probs, value = node.args[0], node.args[1] if len(node.args) > 1 else None
    scores = softmax_input(probs)
    if scores is None or not isinstance(probs, Node):
        return None
    if not sole_user_is(probs, node) or not sole_user_is(scores, probs):
        return None
    for masked, mask in mask_splits(scores):
        s, scale = scaled_by(masked)
        # each op of the chain was checked to be read by the next one only
        if s.target != A.matmul.default or len(s.args) != 2:
            continue
        query, key_t = s.args
        if not all(_is_float32_4d(x) for x in (query, key_t, value, node, scores, s)):
            return None
        if _val(scores).shape != _val(s).shape:  # type: ignore[union-attr]  # both checked 4-d above
            return None  # the mask broadcast the scores to a larger shape
        return {"query": query, "key_t": key_t, "key": _key(key_t), "value": value,
                "mask": mask, "scale": 1.0 if scale is None else scale}
    return None


def _rewrite_attention(node: Node, m: Match, gm: GraphModule) -> Node:
    key = m["key"]
    if key is None:
        key = gm.graph.call_function(A.transpose.int, (m["key_t"], -1, -2))
    return gm.graph.call_function(
        A.scaled_dot_product_attention.default,
        (m["query"], key, m["value"]),
        {"attn_mask": m["mask"], "scale": m["scale"]},
    )


MATMUL_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="attention", anchors=frozenset({A.matmul.default}),
                 match=_match_attention, rewrite=_rewrite_attention, exact=False,
                 doc="matmul(softmax(matmul(q, kT) * c [+ mask]), v) -> fused float attention"),
)
