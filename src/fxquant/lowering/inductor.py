"""Lower a converted model to x86 int8 kernels through Inductor's quantization passes.

(The Inductor target of :mod:`fxquant.lowering`; ``fxquant.pt2e.lowering.
lower_pt2e_quantized_to_x86`` is the same function under its PT2E name.)

Inductor ships pattern passes for the ``quantized_decomposed`` q/dq convention (in
``torch._inductor.fx_passes.quantization``, registered among its freezing passes): they fold
``dequantize -> conv/linear -> [post-ops] -> quantize`` into oneDNN int8 kernels
(``torch.ops.onednn.qconv_pointwise``, ``qlinear_pointwise``, with pre-packed weights and
fused unary/binary post-ops). This module runs them ahead of time and returns the rewritten
graph, to be run as it is (eagerly).

    >>> m = convert_pt2e(prepared)
    >>> fast = lower_for_inductor(m, example_inputs)
    >>> fast(*example_inputs)

For a compiled model, ``torch.compile`` the *converted* model with
``torch._inductor.config.freezing = True`` instead: Inductor runs the same passes during
compilation, also turns int8 max-pool/cat/reshape patterns into integer ops and generates
code for the remaining elementwise ops (faster still: see ``benchmarks/pt2e_inductor.py``).
Compiling the lowered graph itself fails once it holds a fused conv+add, whose oneDNN kernel
accumulates in place.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._inductor.constant_folding import constant_fold
from torch._inductor.fx_passes.freezing_patterns import freezing_passes
from torch.fx import GraphModule, Node

from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["UnsupportedX86LoweringError", "lower_for_inductor"]

A = torch.ops.aten

_CONVOLUTIONS = (A.conv1d.default, A.conv2d.default, A.conv3d.default, A.convolution.default)
_ACTIVATION_DEQUANTIZE = (qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor)


class UnsupportedX86LoweringError(ValueError):
    """The converted model has a pattern Inductor would lower to a kernel that cannot run it."""


def lower_for_inductor(
    model: GraphModule, example_inputs: tuple[torch.Tensor, ...]
) -> GraphModule:
    """Lower a model produced by ``convert_pt2e`` to x86 int8 (oneDNN) kernels.

    The model is re-captured with ``torch.export`` (composite ops such as ``conv2d`` and
    ``linear`` decomposed to the ``convolution`` / ``addmm`` forms Inductor's patterns match),
    then Inductor's freezing passes fuse each q/dq pattern into an int8 kernel with its weight
    pre-packed, and constants are folded. ``model`` itself is not modified. The result is
    specialised to the shapes of ``example_inputs`` (as ``torch.export`` captures them).
    Raises ``UnsupportedX86LoweringError`` for a convolution with int8 (not uint8)
    activations, which the x86 kernels cannot run.

        >>> lowered = lower_for_inductor(convert_pt2e(prepared), (x,))
        >>> lowered(x)   # oneDNN qconv/qlinear kernels
    """
    if not isinstance(model, GraphModule):
        raise TypeError(
            f"lower_for_inductor expects the GraphModule returned by convert_pt2e, "
            f"got {type(model).__name__}"
        )
    _check_conv_activations_are_uint8(model)
    with torch.no_grad():
        exported = torch.export.export(model, tuple(example_inputs))
        lowered = exported.run_decompositions(_composite_implicit_decompositions()).module()
        _spell_as_inductor_patterns_expect(lowered)
        freezing_passes(lowered, list(example_inputs))
        constant_fold(lowered)
    lowered.graph.lint()
    lowered.recompile()
    return lowered


def _check_conv_activations_are_uint8(model: GraphModule) -> None:
    """oneDNN's int8 convolutions read uint8 activations only, and Inductor's pattern does not
    check: an int8 activation would be lowered and then fail at run time. Refuse up front."""
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in _CONVOLUTIONS:
            continue
        x = node.args[0]
        if isinstance(x, Node) and x.target in _ACTIVATION_DEQUANTIZE and x.args[5] != torch.uint8:
            raise UnsupportedX86LoweringError(
                f"{node.format_node()} reads {x.args[5]} activations; x86 int8 convolutions take "
                "uint8 activations. Quantize with X86InductorQuantizer (or a uint8 activation "
                "spec), or run this model as the q/dq reference model."
            )


def _composite_implicit_decompositions() -> dict:
    """Decompose only the ops that have no kernel of their own (CompositeImplicitAutograd:
    ``conv2d -> convolution``, ``linear -> t + addmm``, ...), which is what the graphs that
    Inductor's patterns were written for look like; everything else is kept."""
    table = torch.export.default_decompositions()
    return {op: fn for op, fn in table.items() if _is_composite_implicit(op)}


def _is_composite_implicit(op: torch._ops.OperatorBase) -> bool:
    key = torch._C.DispatchKey.CompositeImplicitAutograd
    return torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), key) or key in op.py_kernels


def _spell_as_inductor_patterns_expect(gm: GraphModule) -> None:
    """Inductor's patterns were written against its own decompositions: the linear pattern
    matches ``permute(w, [1, 0])`` where the decomposition of ``linear`` writes ``t(w)``, and
    the fused relu6/hardtanh post-op matches ``clamp_max(clamp_min(y, lo), hi)``. Rewrite those
    two ops (same values) so the int8 patterns see them."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        with graph.inserting_before(node):
            if node.target == A.t.default and _is_matrix(node.args[0]):
                new = graph.call_function(A.permute.default, (node.args[0], [1, 0]))
            elif node.target == A.hardtanh.default:
                low, high = _hardtanh_range(node)
                clamp_min = graph.call_function(A.clamp_min.default, (node.args[0], low))
                clamp_min.meta.update(node.meta)
                new = graph.call_function(A.clamp_max.default, (clamp_min, high))
            else:
                continue
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.lint()
    gm.recompile()


def _hardtanh_range(node: Node) -> tuple[Any, Any]:
    """``min_val`` and ``max_val`` as the node passes them, else the schema defaults."""
    schema = A.hardtanh.default._schema.arguments
    values = {a.name: a.default_value for a in schema}
    values.update(zip((a.name for a in schema), node.args, strict=False))
    values.update(node.kwargs)
    return values["min_val"], values["max_val"]


def _is_matrix(node: object) -> bool:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return isinstance(val, torch.Tensor) and val.dim() == 2
