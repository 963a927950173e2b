"""Fusion of module chains on a traced graph: ``conv → bn → relu``, ``conv → relu``,
``linear → bn``, ``linear → relu``, ``bn → relu``, ``conv_transpose → bn`` become one
module (``fxquant.nn.intrinsic``, or the float module with batch norm folded in for PTQ),
built by the eager fuser methods. ReLU may be a module, ``F.relu``/``torch.relu`` or the
``relu`` method."""

from __future__ import annotations

from torch import nn
from torch.fx import GraphModule, Node

from fxquant.eager.fuser_methods import get_fuser_method
from fxquant.fx.op_table import RELU_TARGETS

__all__ = ["fuse_graph"]

_ROOTS: tuple[type, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# which chains exist: root type -> allowed follower kinds, in order
_WITH_BN = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
            nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_WITH_RELU = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _module(gm: GraphModule, node: Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    return gm.get_submodule(str(node.target))


def _sole_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_relu(gm: GraphModule, node: Node) -> bool:
    if node.op == "call_module":
        return type(_module(gm, node)) is nn.ReLU
    if node.op == "call_function":
        return node.target in RELU_TARGETS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _chain(gm: GraphModule, root: Node, root_module: nn.Module) -> list[Node]:
    """The nodes fused with ``root`` (root first); just ``[root]`` if there is nothing to fuse."""
    chain = [root]
    nxt = _sole_user(root)
    if isinstance(root_module, _WITH_BN) and nxt is not None and isinstance(_module(gm, nxt), _BNS):
        chain.append(nxt)
        nxt = _sole_user(nxt)
    relu_ok = isinstance(root_module, _WITH_RELU) and (len(chain) == 1 or isinstance(root_module, _CONVS))
    if relu_ok and nxt is not None and _is_relu(gm, nxt) and nxt.args[0] is chain[-1]:
        chain.append(nxt)
    return chain


def fuse_graph(gm: GraphModule, *, is_qat: bool) -> GraphModule:
    """Fuse every chain in ``gm`` in place; returns ``gm`` recompiled."""
    for node in list(gm.graph.nodes):
        if node.graph is not gm.graph or node.op != "call_module":
            continue
        root_module = _module(gm, node)
        if type(root_module) not in _ROOTS:
            continue
        assert root_module is not None
        chain = _chain(gm, node, root_module)
        if len(chain) == 1:
            continue
        modules: list[nn.Module] = [root_module]
        for follower in chain[1:]:
            m = _module(gm, follower)
            modules.append(m if m is not None else nn.ReLU())
        fuser = get_fuser_method(tuple(type(m) for m in modules))
        gm.add_submodule(str(node.target), fuser(is_qat, *modules))
        for follower in reversed(chain[1:]):
            follower.replace_all_uses_with(node)
            gm.graph.erase_node(follower)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
