"""Small graph helpers that PT2E quantizers share (and that third-party quantizers, such as
ExecuTorch's, import from this module): op predicates, attribute naming, and capturing a
pattern function as an aten graph for subgraph matching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.fx import Graph, GraphModule, Node

from fxquant.engine.qat_conv_bn import qat_conv_bn_output
from fxquant.pt2e.export_utils import WrapperModule
from fxquant.pt2e.graph_utils import collect_producer_nodes

__all__ = [
    "_conv_bn_chain",
    "_filter_sym_size_users",
    "_get_aten_graph_module_for_pattern",
    "_is_constant_node",
    "_is_conv_node",
    "_is_conv_or_conv_transpose_node",
    "_is_conv_transpose_node",
    "_is_float_tensor_node",
    "_is_linear_node",
    "_is_sym_size_node",
    "create_getattr_from_value",
    "get_new_attr_name_with_prefix",
    "is_per_channel",
    "is_per_tensor",
]

_aten = torch.ops.aten

_CONV_OPS = frozenset({
    _aten.conv1d.default,
    _aten.conv1d.padding,
    _aten.conv2d.default,
    _aten.conv2d.padding,
    _aten.conv3d.default,
    _aten.conv3d.padding,
})
_CONV_TRANSPOSE_OPS = frozenset({
    _aten.conv_transpose1d.default,
    _aten.conv_transpose2d.input,
    _aten.conv_transpose3d.input,
})
_BATCH_NORM_OPS = frozenset({_aten.batch_norm.default, _aten._native_batch_norm_legit_no_training.default})
_SYM_SIZE_OPS = frozenset({
    _aten.sym_size.default,
    _aten.sym_size.int,
    _aten.sym_numel.default,
})


def is_per_tensor(qscheme: torch.qscheme | None) -> bool:
    return qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric)


def is_per_channel(qscheme: torch.qscheme | None) -> bool:
    return qscheme in (
        torch.per_channel_affine,
        torch.per_channel_affine_float_qparams,
        torch.per_channel_symmetric,
    )


def _is_call(node: Node, targets: frozenset[Any]) -> bool:
    return node.op == "call_function" and node.target in targets


def _is_conv_node(n: Node) -> bool:
    """Whether ``n`` calls an aten convolution (1d/2d/3d, explicit or string padding)."""
    return _is_call(n, _CONV_OPS)


def _is_conv_transpose_node(n: Node) -> bool:
    """Whether ``n`` calls an aten transposed convolution (1d/2d/3d)."""
    return _is_call(n, _CONV_TRANSPOSE_OPS)


def _is_conv_or_conv_transpose_node(n: Node) -> bool:
    return _is_conv_node(n) or _is_conv_transpose_node(n)


def _is_linear_node(n: Node) -> bool:
    return _is_call(n, frozenset({_aten.linear.default}))


def _is_float_tensor_node(n: Node) -> bool:
    """Whether ``n`` produces a float32 tensor (what observers can watch), judging by the
    example value that capture recorded in ``n.meta["val"]``."""
    val = n.meta.get("val")
    return isinstance(val, torch.Tensor) and val.dtype == torch.float32


def _is_constant_node(n: Node) -> bool:
    """Whether ``n`` is computed from constants only (parameters, buffers): not an activation."""
    return collect_producer_nodes(n) is not None


def _conv_bn_chain(conv: Node) -> list[Node] | None:
    """``[conv, ..., batch_norm]`` when a batch norm consumes the conv's output: directly, or
    through the rescale and bias add of the QAT conv-bn rewrite
    (:func:`fxquant.engine.qat_conv_bn.rewrite_conv_bn_for_qat`); None otherwise. The nodes
    between the two must not be observed."""
    end = qat_conv_bn_output(conv)
    if end is None:
        only_user = next(iter(conv.users)) if len(conv.users) == 1 else None
        if only_user is None or not _is_call(only_user, _BATCH_NORM_OPS):
            return None
        end = only_user
    chain = [conv]
    while chain[-1] is not end:
        chain.append(next(iter(chain[-1].users)))
    return chain


def _is_sym_size_node(n: Node) -> bool:
    return _is_call(n, _SYM_SIZE_OPS)


def _filter_sym_size_users(node: Node) -> list[Node]:
    """The users of ``node`` other than shape queries (``sym_size``/``sym_numel``)."""
    return [user for user in node.users if not _is_sym_size_node(user)]


def get_new_attr_name_with_prefix(prefix: str) -> Callable[[nn.Module], str]:
    """A function giving the first unused attribute name ``<prefix><i>`` of a module.

    >>> new_name = get_new_attr_name_with_prefix("_tensor_constant_")
    >>> new_name(model)
    '_tensor_constant_0'
    """
    prefix = prefix.replace(".", "_")

    def get_new_attr_name(module: nn.Module) -> str:
        i = 0
        while hasattr(module, f"{prefix}{i}"):
            i += 1
        return f"{prefix}{i}"

    return get_new_attr_name


def _module_device(module: nn.Module) -> torch.device:
    devices = {t.device for t in [*module.parameters(), *module.buffers()]}
    if len(devices) > 1:
        raise ValueError(
            f"module has tensors on several devices {sorted(map(str, devices))}; pass device="
        )
    return devices.pop() if devices else torch.device("cpu")


def create_getattr_from_value(
    module: nn.Module,
    graph: Graph,
    prefix: str,
    value: Any,
    device: torch.device | None = None,
) -> Node:
    """Register ``value`` (a tensor, or a number made into one) as a new buffer of
    ``module`` named ``<prefix><i>`` and return a ``get_attr`` node reading it (created at
    the graph's current insertion point)."""
    attr_name = get_new_attr_name_with_prefix(prefix)(module)
    if isinstance(value, torch.Tensor):
        buffer = value.detach().clone()
    else:
        buffer = torch.tensor(value, device=device if device is not None else _module_device(module))
    module.register_buffer(attr_name, buffer)
    return graph.create_node("get_attr", attr_name)


def _get_aten_graph_module_for_pattern(
    pattern: Callable[..., Any],
    example_inputs: tuple[Any, ...],
    is_cuda: bool = False,
    **kwargs: Any,
) -> GraphModule:
    """Capture ``pattern`` (a function or module) on ``example_inputs`` as an aten-level
    graph module for subgraph matching: dead code, unused ``copy_`` nodes for mutated inputs
    and the input-shape guard node (``_guards_fn``) are removed, as none belongs to a
    pattern."""
    if is_cuda:
        example_inputs = tuple(x.cuda() if isinstance(x, torch.Tensor) else x for x in example_inputs)
    module = pattern if isinstance(pattern, nn.Module) else WrapperModule(pattern)
    aten_pattern = torch.export.export(module, example_inputs, kwargs, strict=True).module()
    assert isinstance(aten_pattern, GraphModule)
    graph = aten_pattern.graph
    for node in list(graph.nodes):
        unused_copy = node.op == "call_function" and node.target == _aten.copy_.default and not node.users
        if unused_copy or (node.op == "call_module" and node.target == "_guards_fn"):
            graph.erase_node(node)
    if hasattr(aten_pattern, "_guards_fn"):
        delattr(aten_pattern, "_guards_fn")
    graph.eliminate_dead_code()
    aten_pattern.recompile()
    return aten_pattern

