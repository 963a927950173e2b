"""Fold batch norm into the preceding conv / linear (for post-training quantization).

For ``y = BN(conv(x, W, b))`` with BN(γ, β, μ, σ², ε)::

    W' = W * γ / sqrt(σ² + ε)      (per output channel)
    b' = (b - μ) * γ / sqrt(σ² + ε) + β

so the quantizer sees (and quantizes) the weights the deployed model really uses.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from fxquant.engine.constants import NotConstantError, constant_of, drop_dead_constants, set_parameter

__all__ = ["fold_bn_into_conv_and_linear"]

_aten = torch.ops.aten
_CONVS = {_aten.conv1d.default: False, _aten.conv2d.default: False, _aten.conv3d.default: False,
          _aten.conv_transpose1d.default: True, _aten.conv_transpose2d.input: True,
          _aten.conv_transpose3d.input: True}
_BN = (_aten.batch_norm.default, _aten._native_batch_norm_legit_no_training.default)


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
    with torch.no_grad():
        if is_linear:
            w, b = fuse_linear_bn_weights(weight, bias, mean, var, float(eps), gamma, beta)
        else:
            w, b = fuse_conv_bn_weights(weight, bias, mean, var, float(eps), gamma, beta,
                                        transpose=_CONVS[producer.target])  # type: ignore[index]  # an aten overload
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
