"""Give each quantized consumer its own dequantize, so that each op's q/dq pattern is
self-contained for pattern-matching lowerings (Inductor, ExecuTorch, fxquant's own).

The rules are torchao's ``DuplicateDQPass`` (``convert_pt2e`` output is node-for-node the
same graph):

* a dequantize read by several nodes (shape queries ``sym_size``/``sym_numel`` not counted)
  gets one copy per reader that carries a quantization annotation (an input spec or an
  output spec); readers without one (float ops) keep sharing the original;
* the copies are inserted right after the original, which is erased once nothing reads it;
* the dynamic pattern ``choose_qparams -> getitem -> quantize -> dequantize`` stays shared:
  its dequantize reads per-call parameters, and Inductor fuses it into every reader anyway.
"""

from __future__ import annotations

import operator

from torch.fx import GraphModule, Node
from torch.fx.node import map_arg

from fxquant.numerics.ops import DEQUANTIZE_OPS, QUANTIZE_OPS
from fxquant.numerics.ops import quantized_decomposed as qd
from fxquant.pt2e.quantizer.utils import get_annotation
from fxquant.pt2e.utils import _filter_sym_size_users

__all__ = ["duplicate_dequantize_per_user"]



def duplicate_dequantize_per_user(gm: GraphModule) -> GraphModule:
    """Copy each shared dequantize once per annotated reader (see the module docstring),
    drop the dead nodes left behind and recompile ``gm``; returns ``gm``."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in DEQUANTIZE_OPS:
            continue
        readers = _filter_sym_size_users(node)
        if len(readers) <= 1 or _is_dynamic_dequantize(node):
            continue
        for reader in readers:
            if _is_annotated(reader):
                _give_own_copy(gm, node, reader)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm


def _is_annotated(node: Node) -> bool:
    annotation = get_annotation(node)
    if annotation is None:
        return False
    return bool(annotation.input_qspec_map) or annotation.output_qspec is not None


def _is_dynamic_dequantize(dq: Node) -> bool:
    """``dq`` reads ``quantize(x, getitem(choose_qparams(x), 0), ...)``."""
    q = dq.args[0]
    if not isinstance(q, Node) or q.op != "call_function" or q.target not in QUANTIZE_OPS:
        return False
    scale = q.args[1] if len(q.args) > 1 else None
    if not isinstance(scale, Node) or scale.target is not operator.getitem:
        return False
    choose = scale.args[0]
    return isinstance(choose, Node) and choose.target is qd.choose_qparams.tensor


def _give_own_copy(gm: GraphModule, dq: Node, reader: Node) -> None:
    with gm.graph.inserting_after(dq):
        copy = gm.graph.node_copy(dq)

    def swap(n: Node) -> Node:
        return copy if n is dq else n

    reader.args = map_arg(reader.args, swap)
    reader.kwargs = map_arg(reader.kwargs, swap)
