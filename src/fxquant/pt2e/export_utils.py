"""Exported models and their train/eval behaviour.

``model.train()`` / ``model.eval()`` cannot change an exported graph: the capture baked each
dropout's ``train`` flag and each batch norm's ``training`` flag into the op arguments (and
torch's exported modules refuse the calls). The switches below rewrite those flags in place
— only the flags: every dropout keeps its probability, every batch norm its momentum and
eps. Ops whose train/eval difference was resolved at capture time in other ways (user code
branching on ``self.training``) are out of reach, as upstream.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

__all__ = [
    "WrapperModule",
    "allow_exported_model_train_eval",
    "model_is_exported",
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
]

_aten = torch.ops.aten

# op -> position of its train/eval flag; the ops whose behaviour differs between the modes.
_DROPOUT_TRAIN_FLAG: dict[Any, int] = {
    _aten.dropout.default: 2,
    _aten.dropout_.default: 2,
    _aten.feature_dropout.default: 2,
    _aten.feature_dropout_.default: 2,
    _aten.alpha_dropout.default: 2,
    _aten.alpha_dropout_.default: 2,
    _aten.feature_alpha_dropout.default: 2,
    _aten.feature_alpha_dropout_.default: 2,
}
_BATCH_NORM_TRAIN_FLAG: dict[Any, int] = {
    _aten.batch_norm.default: 5,
}

# Upstream's marker of the mode an exported model was last moved to.
_EXPORTED_TRAINING_ATTR = "_exported_training"


class WrapperModule(nn.Module):
    """An ``nn.Module`` whose forward calls ``fn``: lets a plain function be exported.

    >>> gm = torch.export.export(WrapperModule(lambda x: F.relu(x)), (torch.randn(2),)).module()
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function."""
        return self.fn(*args, **kwargs)


def model_is_exported(m: nn.Module) -> bool:
    """True if ``m`` is a graph captured by ``torch.export`` (its nodes carry fake values),
    False for symbolically traced graphs and eager modules."""
    return isinstance(m, GraphModule) and any("val" in n.meta for n in m.graph.nodes)


def _set_train_flags(m: GraphModule, flag_index: dict[Any, int], training: bool) -> int:
    """Set the train flag of every op in ``flag_index`` to ``training``; returns how many
    changed. The graph is linted and recompiled."""
    changed = 0
    for node in m.graph.nodes:
        if node.op != "call_function" or node.target not in flag_index:
            continue
        index = flag_index[node.target]
        if index < len(node.args):
            if node.args[index] is not training:
                args = list(node.args)
                args[index] = training
                node.args = tuple(args)
                changed += 1
        else:
            name = node.target._schema.arguments[index].name
            if node.kwargs.get(name) is not training:
                node.update_kwarg(name, training)
                changed += 1
    m.graph.lint()
    m.recompile()
    return changed


def _replace_dropout(m: GraphModule, train_to_eval: bool) -> None:
    """Switch every dropout in ``m`` to eval (identity) or train behaviour."""
    _set_train_flags(m, _DROPOUT_TRAIN_FLAG, training=not train_to_eval)


def _replace_batchnorm(m: GraphModule, train_to_eval: bool) -> None:
    """Switch every batch norm in ``m`` to running statistics (eval) or batch statistics with
    running-statistics updates (train), keeping its momentum and eps."""
    _set_train_flags(m, _BATCH_NORM_TRAIN_FLAG, training=not train_to_eval)


def _move(model: GraphModule, training: bool) -> GraphModule:
    if not isinstance(model, GraphModule):
        raise TypeError(
            f"expected an exported GraphModule, got {type(model).__name__}; call "
            f"model.{'train' if training else 'eval'}() on eager modules instead"
        )
    setattr(model, _EXPORTED_TRAINING_ATTR, training)
    _replace_dropout(model, train_to_eval=not training)
    _replace_batchnorm(model, train_to_eval=not training)
    return model


def move_exported_model_to_eval(model: GraphModule) -> GraphModule:
    """Make the dropouts and batch norms of an exported model behave as in eval mode (the
    effect of ``model.eval()`` on the eager model, for those ops). Call it before evaluating
    a QAT model. Idempotent; returns ``model``, changed in place.

    >>> prepared = prepare_qat_pt2e(exported, quantizer)
    >>> train(prepared)
    >>> move_exported_model_to_eval(prepared)
    >>> accuracy = evaluate(prepared)
    """
    return _move(model, training=False)


def move_exported_model_to_train(model: GraphModule) -> GraphModule:
    """Make the dropouts and batch norms of an exported model behave as in train mode (the
    effect of ``model.train()``, for those ops). Idempotent; returns ``model``, changed in
    place."""
    return _move(model, training=True)


def allow_exported_model_train_eval(model: GraphModule) -> GraphModule:
    """Let ``model.train()`` / ``model.eval()`` work on an exported model: they call
    :func:`move_exported_model_to_train` / :func:`move_exported_model_to_eval` (and set the
    ``training`` attribute of the model's modules, as on an eager model). Only dropout and
    batch norm change behaviour; see the module docstring for what cannot.

    >>> allow_exported_model_train_eval(prepared)
    >>> prepared.eval()
    """

    def _train(self: GraphModule, mode: bool = True) -> GraphModule:
        _move(self, training=mode)
        for module in self.modules():
            module.training = mode
        return self

    def _eval(self: GraphModule) -> GraphModule:
        return _train(self, False)

    model.train = types.MethodType(_train, model)  # type: ignore[method-assign]  # per-instance override
    model.eval = types.MethodType(_eval, model)  # type: ignore[method-assign]  # per-instance override
    return model


def _disallow_eval_train(model: GraphModule) -> GraphModule:
    """Make ``model.train()`` / ``model.eval()`` raise, pointing at the switches above: on an
    exported model they would silently change nothing in the graph."""
    message = (
        "train() and eval() do not change an exported model's graph. Call "
        "fxquant.pt2e.move_exported_model_to_train(model) / move_exported_model_to_eval(model), "
        "or fxquant.pt2e.allow_exported_model_train_eval(model) once to make train()/eval() "
        "call them (only dropout and batch norm switch behaviour)."
    )

    def _refuse(self: GraphModule, mode: bool = True) -> GraphModule:
        raise NotImplementedError(message)

    model.train = types.MethodType(_refuse, model)  # type: ignore[method-assign]  # per-instance override
    model.eval = types.MethodType(_refuse, model)  # type: ignore[method-assign]  # per-instance override
    return model


def _plain_graph_module(model: GraphModule) -> GraphModule:
    """A plain ``GraphModule`` over ``model``'s graph and the attributes it reads, with
    ``model``'s meta — what torchao's prepare and convert return. ``torch.export``'s
    ``.module()`` wrapper carries forward hooks (an input-shape check and nn.Module-input
    switches) that run Python on every call, also under ``torch.compile`` (about 0.1 ms:
    1-2 % of a compiled int8 MiniLM-L6 call at batch 1)."""
    plain = GraphModule(model, model.graph)
    plain.meta.update(model.meta)
    return plain
