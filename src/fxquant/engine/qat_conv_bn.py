"""QAT conv + batch norm: simulate the folded weight while training, fold it at convert.

prepare (:func:`rewrite_conv_bn_for_qat`) turns ``y = BN(conv(x, W, b))``, with BN(γ, β, μ,
σ², ε), into::

    s = γ / sqrt(σ² + ε)                         (per output channel, running variance)
    y = batch_norm(conv(x, W * s, 0) / s + b, γ, β, μ, σ², training=True, momentum, ε)

In exact arithmetic ``conv(x, W * s, 0) / s + b == conv(x, W, b)``, so training still sees
batch-norm over batch statistics (and the running statistics keep updating). What changes
is the conv's weight argument: it is the product ``W * s``, so a quantizer that annotates
the conv's weight edge fake-quantizes the weight the deployed, folded conv will use.

convert (:func:`fold_conv_bn_qat`), once observers became quantize/dequantize ops, folds the
batch norm with its running statistics at that moment::

    W' = W * s        (keeps the q/dq the training graph had, same scale and zero point)
    b' = (b - μ) * s + β
    y  = conv(x, dq(q(W')), b')

which is what the QAT graph computes in eval mode: ``conv(x, dq(q(W s))) / s + b``
normalized with running statistics is ``conv(x, dq(q(W s))) + (b - μ) s + β``.

Transposed convs (``conv_transpose{1,2,3}d``) are handled the same way; only ``W * s`` differs:
their weight is ``(C_in, C_out / groups, *k)``, so ``s`` runs along axis 1 (for several groups,
expanded over each group's block of input channels, see
:func:`~fxquant.engine.fold_bn.conv_weight_scale`) — a per-channel weight quantizer for them
uses ``ch_axis=1``.

Both passes walk the graph directly rather than through a pattern table: the rewrite must
carry each batch norm's own eps and momentum, which a literal-agnostic subgraph match drops.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch
from torch import Tensor
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg

from fxquant.engine.constants import free_attribute_name
from fxquant.engine.fold_bn import conv_weight_scale, groups_of
from fxquant.engine.meta import PORTED_META_KEYS
from fxquant.numerics.ops import DEQUANTIZE_OPS, QUANTIZE_OPS

__all__ = ["QatConvBnFoldWarning", "fold_conv_bn_qat", "qat_conv_bn_output", "rewrite_conv_bn_for_qat"]

logger = logging.getLogger(__name__)

_aten = torch.ops.aten

# conv op -> number of spatial dimensions (input, weight, bias are args 0, 1, 2 in all of them)
_CONV_OPS: dict[Any, int] = {
    _aten.conv1d.default: 1,
    _aten.conv1d.padding: 1,
    _aten.conv2d.default: 2,
    _aten.conv2d.padding: 2,
    _aten.conv3d.default: 3,
    _aten.conv3d.padding: 3,
    _aten.conv_transpose1d.default: 1,
    _aten.conv_transpose2d.input: 2,
    _aten.conv_transpose3d.input: 3,
}
# their weight is (C_in, C_out / groups, *k): output channels along axis 1
_TRANSPOSED_CONV_OPS = frozenset({
    _aten.conv_transpose1d.default,
    _aten.conv_transpose2d.input,
    _aten.conv_transpose3d.input,
})
_BATCH_NORM = _aten.batch_norm.default

# Provenance copied from the conv onto the nodes the rewrite creates; the numeric-debug
# handle ("custom") stays unique to the conv itself.
_PROVENANCE_KEYS = tuple(k for k in PORTED_META_KEYS if k != "custom")


class QatConvBnFoldWarning(UserWarning):
    """A QAT conv-bn pattern could not be folded at convert; it stays as computed in training."""


# ---------------------------------------------------------------------------------------------
# Small node helpers


def _is_call(node: object, *targets: Any) -> TypeGuard[Node]:
    return isinstance(node, Node) and node.op == "call_function" and node.target in targets


def _is_conv(node: object) -> TypeGuard[Node]:
    return isinstance(node, Node) and node.op == "call_function" and node.target in _CONV_OPS


def _arg(node: Node, index: int, default: Any = None) -> Any:
    """Argument ``index`` of an aten call, positional or by its schema name."""
    if index < len(node.args):
        return node.args[index]
    name = node.target._schema.arguments[index].name  # type: ignore[union-attr]  # aten OpOverload
    return node.kwargs.get(name, default)


def _set_arg(node: Node, index: int, value: Any) -> None:
    name = node.target._schema.arguments[index].name  # type: ignore[union-attr]  # aten OpOverload
    if index < len(node.args):
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
    elif name in node.kwargs or index > len(node.args):
        node.update_kwarg(name, value)
    else:
        node.args = (*node.args, value)


def _infer_val(node: Node) -> None:
    """Fill ``meta["val"]`` by running the op on its inputs' fake values (export's fake mode)."""
    vals = [n.meta.get("val") for n in node.all_input_nodes]
    if any(v is None for v in vals):
        return
    fake_mode = next((m for m in (getattr(v, "fake_mode", None) for v in vals) if m is not None), None)
    if fake_mode is None:
        return
    args, kwargs = map_arg((node.args, node.kwargs), lambda n: n.meta["val"])
    with fake_mode:
        node.meta["val"] = node.target(*args, **kwargs)  # type: ignore[operator]  # call_function


def _emit(gm: GraphModule, provenance: Node, op: Any, *args: Any, **kwargs: Any) -> Node:
    node = gm.graph.call_function(op, args, kwargs)
    for key in _PROVENANCE_KEYS:
        if key in provenance.meta:
            node.meta[key] = provenance.meta[key]
    _infer_val(node)
    return node


def _precedes(first: Node, second: Node) -> bool:
    node = first
    while node.op != "root":
        if node is second:
            return True
        node = node.next
    return False


def _fetch(gm: GraphModule, node: object) -> Tensor | None:
    """The constant behind a ``get_attr`` node (None for None); raises for anything else."""
    if node is None:
        return None
    if not isinstance(node, Node) or node.op != "get_attr":
        raise _NotConstant(node)
    obj: Any = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Tensor):
        raise _NotConstant(node)
    return obj


class _NotConstant(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# prepare: conv -> batch_norm becomes the simulated-fold pattern


@dataclass(frozen=True, kw_only=True)
class _BatchNormArgs:
    weight: Node | None
    bias: Node | None
    running_mean: Node
    running_var: Node
    momentum: float
    eps: float
    cudnn_enabled: bool

    @staticmethod
    def of(bn: Node) -> _BatchNormArgs | None:
        running_mean, running_var = _arg(bn, 3), _arg(bn, 4)
        if not isinstance(running_mean, Node) or not isinstance(running_var, Node):
            return None  # no running statistics (track_running_stats=False): nothing to fold
        return _BatchNormArgs(
            weight=_arg(bn, 1), bias=_arg(bn, 2), running_mean=running_mean,
            running_var=running_var, momentum=_arg(bn, 6), eps=_arg(bn, 7),
            cudnn_enabled=_arg(bn, 8),
        )


def rewrite_conv_bn_for_qat(gm: GraphModule) -> GraphModule:
    """Rewrite every ``conv{1,2,3}d -> batch_norm`` or ``conv_transpose{1,2,3}d ->
    batch_norm`` pair (conv output used only by the batch norm, batch norm tracking running
    statistics) into the simulated-fold pattern described in
    the module docstring, in place. Batch norms are set to training mode; their momentum and
    eps are kept. Graphs captured in train or eval mode are both accepted.

    >>> gm = torch.export.export(model.train(), example_inputs).module()
    >>> gm = rewrite_conv_bn_for_qat(gm)   # then annotate: the conv weight input is W * s
    """
    count = 0
    for bn in list(gm.graph.nodes):
        if not _is_call(bn, _BATCH_NORM):
            continue
        conv, bn_args = bn.args[0], _BatchNormArgs.of(bn)
        if not _is_conv(conv) or len(conv.users) != 1 or bn_args is None:
            continue
        layout = _weight_layout(gm, conv)
        if layout is None:
            continue
        _rewrite_pair(gm, conv, bn, bn_args, layout)
        count += 1
    logger.debug("rewrote %d conv-bn pairs for QAT", count)
    gm.graph.lint()
    gm.recompile()
    return gm


@dataclass(frozen=True, kw_only=True)
class _WeightLayout:
    """Where a conv weight keeps its output channels (see ``conv_weight_scale``)."""

    rank: int
    transposed: bool
    groups: int
    in_out_channels: tuple[int, int] | None = None  # weight dims 0 and 1 of a grouped transposed conv


def _weight_layout(gm: GraphModule, conv: Node) -> _WeightLayout | None:
    """The weight layout of ``conv``; None (conv left alone) when the groups are not a
    constant or a grouped transposed conv's weight shape is unknown."""
    transposed = conv.target in _TRANSPOSED_CONV_OPS
    rank = _CONV_OPS[conv.target] + 2
    try:
        groups = groups_of(conv)
    except TypeError:
        logger.debug("not rewriting %s: groups is not a constant", conv.format_node())
        return None
    if not (transposed and groups > 1):
        return _WeightLayout(rank=rank, transposed=transposed, groups=groups)
    weight = _arg(conv, 1)
    val = weight.meta.get("val") if isinstance(weight, Node) else None
    if val is None:
        try:
            val = _fetch(gm, weight)
        except _NotConstant:
            val = None
    if not isinstance(val, Tensor):
        logger.debug("not rewriting %s: its weight shape is unknown", conv.format_node())
        return None
    return _WeightLayout(rank=rank, transposed=True, groups=groups,
                         in_out_channels=(int(val.shape[0]), int(val.shape[1])))


def _emit_weight_scale(gm: GraphModule, conv: Node, scale: Node, layout: _WeightLayout) -> Node:
    """Graph ops computing ``conv_weight_scale(scale, ...)`` (reshape, or reshape-expand-reshape
    for grouped transposed convs)."""
    rank = layout.rank
    if not layout.transposed:
        return _emit(gm, conv, _aten.reshape.default, scale, [-1] + [1] * (rank - 1))
    if layout.groups == 1:
        return _emit(gm, conv, _aten.reshape.default, scale, [1, -1] + [1] * (rank - 2))
    assert layout.in_out_channels is not None
    g, (c_in, c_out_g) = layout.groups, layout.in_out_channels
    grouped = _emit(gm, conv, _aten.reshape.default, scale, [g, 1, c_out_g])
    expanded = _emit(gm, conv, _aten.expand.default, grouped, [g, c_in // g, c_out_g])
    return _emit(gm, conv, _aten.reshape.default, expanded, [c_in, c_out_g] + [1] * (rank - 2))


def _rewrite_pair(gm: GraphModule, conv: Node, bn: Node, p: _BatchNormArgs, layout: _WeightLayout) -> None:
    rank = layout.rank
    channel_shape = [1, -1] + [1] * (rank - 2)  # s along the activation's channels
    for param in (p.weight, p.bias, p.running_mean, p.running_var):
        if isinstance(param, Node) and param.op == "get_attr" and not _precedes(param, conv):
            conv.prepend(param)
    weight, bias = _arg(conv, 1), _arg(conv, 2)
    graph = gm.graph
    with graph.inserting_before(conv):
        std = _emit(gm, conv, _aten.sqrt.default, _emit(gm, conv, _aten.add.Tensor, p.running_var, p.eps))
        if p.weight is None:
            scale = _emit(gm, conv, _aten.reciprocal.default, std)
        else:
            scale = _emit(gm, conv, _aten.div.Tensor, p.weight, std)
        scaled_weight = _emit(gm, conv, _aten.mul.Tensor, weight, _emit_weight_scale(gm, conv, scale, layout))
        zero_bias = None if bias is None else _emit(gm, conv, _aten.zeros_like.default, bias)
    _set_arg(conv, 1, scaled_weight)
    _set_arg(conv, 2, zero_bias)
    with graph.inserting_before(bn):
        out = _emit(
            gm, conv, _aten.div.Tensor, conv, _emit(gm, conv, _aten.reshape.default, scale, channel_shape)
        )
        if bias is not None:
            out = _emit(
                gm, conv, _aten.add.Tensor, out, _emit(gm, conv, _aten.reshape.default, bias, channel_shape)
            )
    bn.args = (out, p.weight, p.bias, p.running_mean, p.running_var, True, p.momentum, p.eps, p.cudnn_enabled)
    bn.kwargs = {}


# ---------------------------------------------------------------------------------------------
# Recognising the pattern (for quantizers and for the fold)


@dataclass(frozen=True, kw_only=True)
class _QatConvBn:
    """One simulated-fold pattern: ``bn(div(conv(x, W*s, zero_bias), s) [+ b])``."""

    conv: Node
    bn: Node
    scaled_weight: Node | None  # the ``W * s`` node; None if a pass already replaced it
    bias_reshape: Node | None  # ``reshape(b)`` feeding the bias add, if the conv had a bias

    @property
    def conv_bias(self) -> Node | None:
        if self.bias_reshape is None:
            return None
        bias = self.bias_reshape.args[0]
        assert isinstance(bias, Node)
        return bias


def _strip_qdq(node: object) -> object:
    """``dq(q(x)) -> x``; anything else unchanged."""
    if _is_call(node, *DEQUANTIZE_OPS):
        q = node.args[0]
        if _is_call(q, *QUANTIZE_OPS):
            return q.args[0]
    return node


def _reshape_input(node: object) -> Node | None:
    if _is_call(node, _aten.reshape.default) and isinstance(node.args[0], Node):
        return node.args[0]
    return None


def _view_source(node: object) -> object:
    """The node a chain of reshapes / expands starts from (``node`` itself if none)."""
    while _is_call(node, _aten.reshape.default, _aten.expand.default) and isinstance(node.args[0], Node):
        node = node.args[0]
    return node


def _match_from_bn(bn: Node) -> _QatConvBn | Node | None:
    """The pattern ending at ``bn``; or the offending node when a quantizer observed the conv
    output inside the pattern; or None."""
    out = bn.args[0]
    bias_reshape: Node | None = None
    if _is_call(out, _aten.add.Tensor):
        reshape, out = out.args[1], out.args[0]
        if not _is_call(reshape, _aten.reshape.default):
            return None
        bias_reshape = reshape
    if not _is_call(out, _aten.div.Tensor) or len(out.users) != 1:
        return None
    scale, conv = _reshape_input(out.args[1]), out.args[0]
    if scale is None:
        return None
    if not _is_conv(conv):
        return conv if _is_call(conv, *DEQUANTIZE_OPS) and _is_conv(_strip_qdq(conv)) else None
    if len(conv.users) != 1 or (bias_reshape is None) != (_arg(conv, 2) is None):
        return None
    weight = _strip_qdq(_arg(conv, 1))
    scaled_weight = None
    if _is_call(weight, _aten.mul.Tensor):
        if _view_source(weight.args[1]) is not scale:
            return None
        scaled_weight = weight
    return _QatConvBn(conv=conv, bn=bn, scaled_weight=scaled_weight, bias_reshape=bias_reshape)


def qat_conv_bn_output(conv: Node) -> Node | None:
    """For a conv rewritten by :func:`rewrite_conv_bn_for_qat`, the batch-norm node that ends
    its pattern (where a quantizer should put the output annotation, or on the activation
    that follows it); None for any other conv.

    Quantizers annotate the conv's input and weight edges as usual; the nodes between the
    conv and the batch norm (rescaling by ``1/s``, adding the bias) must stay unobserved.
    """
    if not _is_conv(conv) or len(conv.users) != 1:
        return None
    node = next(iter(conv.users))
    for _ in range(2):  # div, then the optional bias add
        if len(node.users) != 1:
            return None
        node = next(iter(node.users))
        if _is_call(node, _BATCH_NORM):
            match = _match_from_bn(node)
            return node if isinstance(match, _QatConvBn) and match.conv is conv else None
    return None


# ---------------------------------------------------------------------------------------------
# convert: fold the batch norm into the conv


def fold_conv_bn_qat(gm: GraphModule) -> GraphModule:
    """Replace every QAT conv-bn pattern (after observers became q/dq) by a conv whose weight
    and bias have the batch norm folded in with its current running statistics, in place.
    The weight keeps its quantize/dequantize ops with the same parameters. A pattern whose
    conv output was itself observed cannot be folded exactly; it is left unchanged with a
    :class:`QatConvBnFoldWarning`.

    >>> gm = convert_observers_to_qdq(prepared)   # the QAT model after training
    >>> gm = fold_conv_bn_qat(gm)                 # no batch_norm left for rewritten convs
    """
    folded = 0
    for bn in list(gm.graph.nodes):
        if not _is_call(bn, _BATCH_NORM):
            continue
        match = _match_from_bn(bn)
        if isinstance(match, Node):
            warnings.warn(
                f"cannot fold the QAT batch norm {bn.format_node()}: its conv output is "
                f"quantized ({match.format_node()}) before the batch norm. Annotate the output "
                "of the batch norm (or of the activation after it) instead; see qat_conv_bn_output",
                QatConvBnFoldWarning,
                stacklevel=2,
            )
        elif match is not None:
            folded += _fold(gm, match)
    logger.debug("folded %d QAT conv-bn patterns", folded)
    if folded:
        gm.graph.eliminate_dead_code()  # the scale subgraph, reshapes, zero biases, old weights
    gm.graph.lint()
    gm.recompile()
    return gm


def _fold(gm: GraphModule, m: _QatConvBn) -> int:
    p = _BatchNormArgs.of(m.bn)
    assert p is not None  # the rewrite only produces batch norms with running statistics
    try:
        gamma, beta = _fetch(gm, p.weight), _fetch(gm, p.bias)
        mean, var = _fetch(gm, p.running_mean), _fetch(gm, p.running_var)
        weight = None if m.scaled_weight is None else _fetch(gm, m.scaled_weight.args[0])
        conv_bias = _fetch(gm, m.conv_bias)
    except _NotConstant as e:
        warnings.warn(
            f"cannot fold the QAT batch norm {m.bn.format_node()}: {e.args[0]} is not a "
            "constant of the model",
            QatConvBnFoldWarning,
            stacklevel=3,
        )
        return 0
    assert mean is not None and var is not None
    with torch.no_grad():
        # s = γ / sqrt(σ² + ε), with the same ops as the training graph (bit-equal W * s)
        std = torch.sqrt(var + p.eps)
        scale = torch.reciprocal(std) if gamma is None else gamma / std
        # b' = (b - μ) * s + β
        folded_bias = ((0 if conv_bias is None else conv_bias.reshape(-1)) - mean) * scale
        if beta is not None:
            folded_bias = folded_bias + beta
        if weight is not None:
            assert m.scaled_weight is not None
            folded_weight = weight * conv_weight_scale(
                scale, weight.shape, transposed=m.conv.target in _TRANSPOSED_CONV_OPS,
                groups=groups_of(m.conv),
            )
            original = m.scaled_weight.args[0]
            assert isinstance(original, Node)
            _replace_with_constant(gm, m.scaled_weight, folded_weight, original, dying={m.scaled_weight})
    _set_folded_bias(gm, m, folded_bias.detach())
    m.bn.replace_all_uses_with(m.conv)
    gm.graph.erase_node(m.bn)
    _drop_batch_counter(gm, p.running_mean)
    return 1


def _set_folded_bias(gm: GraphModule, m: _QatConvBn, folded_bias: Tensor) -> None:
    """Put ``folded_bias`` where the conv reads its bias: in place of ``zeros_like(b)`` (under
    its q/dq if the bias was quantized), or as a new bias argument."""
    slot = _strip_qdq(_arg(m.conv, 2))
    if isinstance(slot, Node) and m.conv_bias is not None and m.bias_reshape is not None:
        _replace_with_constant(gm, slot, folded_bias, m.conv_bias, dying={slot, m.bias_reshape})
        return
    weight = _strip_qdq(_arg(m.conv, 1))
    owner = str(weight.target).rpartition(".")[0] if _is_get_attr(weight) else ""
    with gm.graph.inserting_before(m.conv):
        bias_node = _new_constant(gm, folded_bias, free_attribute_name(gm, f"{owner}.bias" if owner else "_qat_bias"), m.conv)
    _set_arg(m.conv, 2, bias_node)


def _replace_with_constant(gm: GraphModule, node: Node, value: Tensor, original: Node, *, dying: set[Node]) -> None:
    """Replace ``node`` by a ``get_attr`` of ``value``. The parameter ``original`` it was
    computed from is overwritten when only nodes that die with the fold read it (as upstream
    does: the converted model's ``conv.weight`` is the folded weight); else a new attribute
    is added next to it."""
    if _is_get_attr(original) and set(original.users) <= dying:
        target = str(original.target)
    else:
        base = str(original.target) if _is_get_attr(original) else "_qat"
        target = free_attribute_name(gm, f"{base}_folded")
    with gm.graph.inserting_before(node):
        new = _new_constant(gm, value, target, node)
    node.replace_all_uses_with(new)


def _is_get_attr(node: object) -> TypeGuard[Node]:
    return isinstance(node, Node) and node.op == "get_attr"


def _new_constant(gm: GraphModule, value: Tensor, target: str, provenance: Node) -> Node:
    """Store ``value`` at ``target`` (a buffer stays a buffer, anything else becomes a frozen
    parameter) and return a ``get_attr`` node reading it."""
    owner_name, _, leaf = target.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    if leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        if hasattr(owner, leaf):
            delattr(owner, leaf)
        owner.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
    node = gm.graph.get_attr(target)
    for key in _PROVENANCE_KEYS:
        if key in provenance.meta:
            node.meta[key] = provenance.meta[key]
    val = provenance.meta.get("val")
    if hasattr(val, "fake_mode"):
        node.meta["val"] = val.fake_mode.from_tensor(value, static_shapes=True)  # type: ignore[union-attr]
    return node


def _drop_batch_counter(gm: GraphModule, running_mean: Node) -> None:
    """Remove ``num_batches_tracked.add_(1)`` of the folded batch norm (train-mode captures):
    the converted model must not mutate state."""
    owner = str(running_mean.target).rpartition(".")[0]
    counter = f"{owner}.num_batches_tracked" if owner else "num_batches_tracked"
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and node.target == counter:
            for user in list(node.users):
                if _is_call(user, _aten.add_.Tensor) and not user.users:
                    gm.graph.erase_node(user)
