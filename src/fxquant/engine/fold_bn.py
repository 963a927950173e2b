"""Fold batch norm into the preceding conv / linear (for post-training quantization).

For ``y = BN(conv(x, W, b))`` with BN(γ, β, μ, σ², ε)::

    W' = W * γ / sqrt(σ² + ε)      (per output channel)
    b' = (b - μ) * γ / sqrt(σ² + ε) + β

so the quantizer sees (and quantizes) the weights the deployed model really uses.

"Per output channel" depends on the layout of the weight (:func:`conv_weight_scale`): a conv
weight is ``(C_out, C_in / groups, *k)``, a transposed conv weight ``(C_in, C_out / groups,
*k)`` — output channels along axis 1, and with ``groups > 1`` each input-channel block holds
the weights of its own group of output channels. (torch's ``fuse_conv_bn_weights`` assumes
``groups == 1`` for transposed convs and fails, or silently broadcasts to a wrong shape,
otherwise; for every layout it handles, the fold here computes the same values with the same
ops.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.fx import GraphModule, Node
from torch.nn.utils.fusion import fuse_linear_bn_weights

from fxquant.engine.constants import (
    NotConstantError,
    constant_of,
    drop_dead_constants,
    set_parameter,
)

__all__ = ["conv_weight_scale", "fold_bn_into_conv_and_linear", "fuse_conv_bn_weights", "groups_of"]

_aten = torch.ops.aten
# conv op -> whether it is transposed (weight output channels along axis 1)
_CONVS = {_aten.conv1d.default: False, _aten.conv2d.default: False, _aten.conv3d.default: False,
          _aten.conv1d.padding: False, _aten.conv2d.padding: False, _aten.conv3d.padding: False,
          _aten.conv_transpose1d.default: True, _aten.conv_transpose2d.input: True,
          _aten.conv_transpose3d.input: True}
_BN = (_aten.batch_norm.default, _aten._native_batch_norm_legit_no_training.default)
# ``groups`` is argument 6 of every conv and conv_transpose overload above
_GROUPS_INDEX = 6


def groups_of(conv: Node) -> int:
    """The ``groups`` argument of an aten conv / conv_transpose call (1 when omitted)."""
    if len(conv.args) > _GROUPS_INDEX:
        groups = conv.args[_GROUPS_INDEX]
    else:
        groups = conv.kwargs.get("groups", 1)
    if not isinstance(groups, int):
        raise TypeError(
            f"{conv.format_node()}: groups must be a Python int to fold a batch norm, got "
            f"{groups!r}; capture the model with a constant number of groups"
        )
    return groups


def conv_weight_scale(
    scale: Tensor, weight_shape: Sequence[int], *, transposed: bool, groups: int = 1
) -> Tensor:
    """``scale`` (one value per output channel) laid out to multiply a conv weight of
    ``weight_shape`` element-wise, each weight getting the value of its output channel.

    conv: ``(C_out, ...)`` → shape ``(C_out, 1, ...)``. Transposed conv, weight
    ``(C_in, C_out / groups, ...)``: shape ``(1, C_out, 1, ...)`` for one group; for more, the
    weight at ``[i, j]`` belongs to output channel ``(i // (C_in / groups)) * C_out / groups + j``,
    so the scale is expanded to ``(C_in, C_out / groups, 1, ...)``.
    """
    rank = len(weight_shape)
    if not transposed:
        return scale.reshape([-1] + [1] * (rank - 1))
    if groups == 1:
        return scale.reshape([1, -1] + [1] * (rank - 2))
    c_in, c_out_per_group = int(weight_shape[0]), int(weight_shape[1])
    if c_in % groups or scale.numel() != groups * c_out_per_group:
        raise ValueError(
            f"a transposed conv weight of shape {tuple(weight_shape)} with groups={groups} "
            f"does not match {scale.numel()} output-channel scales; check the model's channels"
        )
    return (
        scale.reshape(groups, 1, c_out_per_group)
        .expand(groups, c_in // groups, c_out_per_group)
        .reshape([c_in, c_out_per_group] + [1] * (rank - 2))
    )


def fuse_conv_bn_weights(
    conv_w: Tensor,
    conv_b: Tensor | None,
    bn_rm: Tensor,
    bn_rv: Tensor,
    bn_eps: float,
    bn_w: Tensor | None,
    bn_b: Tensor | None,
    *,
    transposed: bool = False,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """Conv (or transposed conv) weight and bias with an eval-mode batch norm folded in.

    The arithmetic (and so every bit) is that of ``torch.nn.utils.fusion.fuse_conv_bn_weights``;
    unlike it, grouped transposed convs are laid out correctly (:func:`conv_weight_scale`).
    """
    if conv_b is None:
        conv_b = torch.zeros_like(bn_rm)
    if bn_w is None:
        bn_w = torch.ones_like(bn_rm)
    if bn_b is None:
        bn_b = torch.zeros_like(bn_rm)
    bn_var_rsqrt = torch.rsqrt(bn_rv + bn_eps)
    factor = conv_weight_scale(bn_w * bn_var_rsqrt, conv_w.shape, transposed=transposed, groups=groups)
    fused_w = (conv_w * factor).to(dtype=conv_w.dtype)
    fused_b = ((conv_b - bn_rm) * bn_var_rsqrt * bn_w + bn_b).to(dtype=conv_b.dtype)
    return fused_w, fused_b


def _bn_params(gm: GraphModule, bn: Node) -> tuple | None:
    """(gamma, beta, mean, var, eps) of a batch norm with constant parameters."""
    a = bn.args
    # batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn);
    # _native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)
    eps = a[7] if bn.target == _aten.batch_norm.default else a[6]
    assert isinstance(eps, float)
    try:
        return (*(constant_of(gm, a[i]) for i in range(1, 5)), eps)
    except NotConstantError:
        return None


def fold_bn_into_conv_and_linear(gm: GraphModule) -> GraphModule:
    """Fold every conv/linear → batch_norm pair whose parameters are constants and whose
    conv output feeds only the batch norm."""
    for bn in list(gm.graph.nodes):
        if bn.op != "call_function" or bn.target not in _BN:
            continue
        producer = bn.args[0]
        if not isinstance(producer, Node) or len(producer.users) != 1:
            continue
        is_linear = producer.target == _aten.linear.default
        if not is_linear and producer.target not in _CONVS:
            continue
        _fold_pair(gm, producer, bn, is_linear)
    drop_dead_constants(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


def _fold_pair(gm: GraphModule, producer: Node, bn: Node, is_linear: bool) -> None:
    params = _bn_params(gm, bn)
    weight_node = producer.args[1]
    bias_node = producer.args[2] if len(producer.args) > 2 else None
    try:
        weight, bias = constant_of(gm, weight_node), constant_of(gm, bias_node)
    except NotConstantError:
        return
    if params is None or not isinstance(weight, torch.Tensor):
        return
    assert bias is None or isinstance(bias, torch.Tensor)
    gamma, beta, mean, var, eps = params
    if mean is None or var is None:
        return
    w: torch.Tensor
    b: torch.Tensor
    with torch.no_grad():
        if is_linear:
            w, b = fuse_linear_bn_weights(weight, bias, mean, var, float(eps), gamma, beta)
        else:
            try:
                groups = groups_of(producer)
            except TypeError:
                return
            transposed = _CONVS[producer.target]  # type: ignore[index]  # an aten overload
            w, b = fuse_conv_bn_weights(weight, bias, mean, var, float(eps), gamma, beta,
                                        transposed=transposed, groups=groups)
    assert isinstance(weight_node, Node)
    set_parameter(gm, str(weight_node.target), w)
    if isinstance(bias_node, Node):
        set_parameter(gm, str(bias_node.target), b)
    else:
        name = f"{weight_node.target}_bn_folded_bias".replace(".", "_")
        gm.register_parameter(name, torch.nn.Parameter(b.detach(), requires_grad=False))
        with gm.graph.inserting_before(producer):
            new_bias = gm.graph.get_attr(name)
        args = list(producer.args) + [None] * (3 - len(producer.args))
        args[2] = new_bias
        producer.args = tuple(args)
    # the conv now computes what the batch norm did: it takes over the BN's identity
    # (numeric-debug handle, provenance), so comparisons stay like for like
    producer.meta["custom"] = {**producer.meta.get("custom", {}), **bn.meta.get("custom", {})}
    if "from_node" in bn.meta:
        producer.meta["from_node"] = bn.meta["from_node"]
    bn.replace_all_uses_with(producer)
    gm.graph.erase_node(bn)
