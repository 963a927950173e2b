"""The PT2E numeric debugger: tag nodes with stable handles, log every handle's output in the
float and the quantized model, and compare the two per handle (SQNR, MSE).

    >>> ep = torch.export.export(float_model, example_inputs)
    >>> generate_numeric_debug_handle(ep)          # before ep.module(): handles ride in node.meta
    >>> m = ep.module()
    >>> ref = prepare_for_propagation_comparison(m)        # a logging copy of the float model
    >>> quantized = convert_pt2e(calibrate(prepare_pt2e(m, quantizer)))
    >>> actual = prepare_for_propagation_comparison(quantized)
    >>> ref(*example_inputs); actual(*example_inputs)
    >>> summary = compare_results(extract_results_from_loggers(ref), extract_results_from_loggers(actual))
    >>> {handle: s.results[0].sqnr for handle, s in summary.items()}

A handle lives in ``node.meta[CUSTOM_KEY][NUMERIC_DEBUG_HANDLE_KEY]``. The engine copies the
``CUSTOM_KEY`` entry onto the quantize/dequantize nodes it creates after a node, so in the
quantized model several nodes carry one handle; the logger goes on the *last* of them in graph
order, i.e. the op's output as the quantized model passes it on (after its q/dq).

Models without handles (torchao's newer flow) are keyed by provenance instead: the original
node's name and graph id, read from ``node.meta["from_node"]`` (:class:`NodeSourceDebugInfo`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import ExportedProgram
from torch.fx import GraphModule, Node

from fxquant.metrics import sqnr as _sqnr
from fxquant.pt2e.graph_utils import bfs_trace_with_node_process
from fxquant.pt2e.utils import get_new_attr_name_with_prefix

__all__ = [
    "CUSTOM_KEY",
    "NUMERIC_DEBUG_HANDLE_KEY",
    "DebugKey",
    "NodeAccuracySummary",
    "NodeSourceDebugInfo",
    "OutputLogger",
    "QuantizationComparisonResult",
    "compare_results",
    "extract_results_from_loggers",
    "generate_numeric_debug_handle",
    "get_debug_key",
    "prepare_for_propagation_comparison",
]

log = logging.getLogger(__name__)

CUSTOM_KEY = "custom"
NUMERIC_DEBUG_HANDLE_KEY = "numeric_debug_handle"
_FROM_NODE_KEY = "from_node"
# the pass name torch gives nodes that ExportedProgram.module() adds (not in the user's graph)
_UNLIFT_PASS_NAME = "ExportedProgram.module().unlift()"


@dataclass(frozen=True, kw_only=True)
class NodeSourceDebugInfo:
    """Where a node came from in the exported graph: its original name and graph id."""

    name: str
    graph_id: int


# what results are keyed by: the numeric debug handle, or the node's provenance
DebugKey = int | NodeSourceDebugInfo
LoggedResults = dict[DebugKey, tuple[str | None, object, list[object]]]


def generate_numeric_debug_handle(ep: ExportedProgram) -> None:
    """Give every node of ``ep`` (and of its control-flow subgraphs) except placeholders and
    outputs a unique integer handle in ``node.meta[CUSTOM_KEY][NUMERIC_DEBUG_HANDLE_KEY]``, in
    place. Nodes that already have one keep it; new handles start above the largest present.
    Call it before ``ep.module()``; prepare/convert carry the handles along."""
    if not isinstance(ep, ExportedProgram):
        raise TypeError(
            f"generate_numeric_debug_handle expects an ExportedProgram, got {type(ep).__name__}; "
            "pass the result of torch.export.export(model, example_inputs)"
        )
    largest = -1

    def find_largest(node: Node) -> None:
        nonlocal largest
        handle = node.meta.get(CUSTOM_KEY, {}).get(NUMERIC_DEBUG_HANDLE_KEY)
        if handle is not None:
            largest = max(largest, handle)

    def assign(node: Node) -> None:
        nonlocal largest
        custom = node.meta.setdefault(CUSTOM_KEY, {})
        if NUMERIC_DEBUG_HANDLE_KEY not in custom:
            largest += 1
            custom[NUMERIC_DEBUG_HANDLE_KEY] = largest

    bfs_trace_with_node_process(ep, find_largest)
    bfs_trace_with_node_process(ep, assign)


def _numeric_debug_handle(node: Node) -> int | None:
    custom = node.meta.get(CUSTOM_KEY)
    if not isinstance(custom, dict):
        return None
    handle = custom.get(NUMERIC_DEBUG_HANDLE_KEY)
    return handle if isinstance(handle, int) else None


def _node_source(node: Node) -> NodeSourceDebugInfo | None:
    """The oldest ancestor recorded in ``from_node`` (None for nodes torch added itself)."""
    sources = node.meta.get(_FROM_NODE_KEY)
    if not sources or sources[-1].pass_name == _UNLIFT_PASS_NAME:
        return None
    source = sources[-1]
    while source.from_node:
        source = source.from_node[-1]
    return NodeSourceDebugInfo(name=source.name, graph_id=source.graph_id)


def get_debug_key(node: Node, *, use_handles: bool = True) -> DebugKey | None:
    """The key ``node``'s logged output is filed under: its numeric debug handle
    (``use_handles``) or its provenance; None for nodes that are not logged."""
    if node.op in ("placeholder", "output", "get_attr"):
        return None
    return _numeric_debug_handle(node) if use_handles else _node_source(node)


class OutputLogger(nn.Module):
    """Records (detached) every value that passes through it; returns it unchanged."""

    _is_impure = True  # keep the call through dead-code elimination

    def __init__(self, debug_handle: DebugKey, node_name: str | None = None,
                 nn_module_stack: object | None = None) -> None:
        super().__init__()
        self.debug_handle = debug_handle
        self.node_name = node_name
        self.nn_module_stack = nn_module_stack
        self.stats: list[object] = []

    @property
    def debug_info(self) -> DebugKey:
        """The newer upstream name for :attr:`debug_handle`."""
        return self.debug_handle

    def forward(self, x: object) -> object:
        self.stats.append(_detach(x))
        return x

    def extra_repr(self) -> str:
        return f"debug_handle={self.debug_handle}, node_name={self.node_name}, num_stats={len(self.stats)}"


def _detach(x: object) -> object:
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(_detach(e) for e in x)
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


def _insert_logger(model: GraphModule, node: Node, key: DebugKey) -> Node:
    """Put an :class:`OutputLogger` after ``node`` and route ``node``'s users through it."""
    name = get_new_attr_name_with_prefix(f"{node.name}_logger")(model)
    setattr(model, name, OutputLogger(key, node.name, node.meta.get("nn_module_stack")))
    with model.graph.inserting_after(node):
        logger_node = model.graph.call_module(name, (node,))
    for user in list(node.users):
        if user is not logger_node:
            user.replace_input_with(node, logger_node)
    return logger_node


def prepare_for_propagation_comparison(model: GraphModule) -> GraphModule:
    """A copy of ``model`` with an :class:`OutputLogger` on the last node of each debug key
    (numeric debug handle, or provenance when the model has no handles). Run the copy, then
    read the logs with :func:`extract_results_from_loggers`; ``model`` is left unchanged."""
    if not isinstance(model, GraphModule):
        raise TypeError(
            f"prepare_for_propagation_comparison expects a GraphModule, got {type(model).__name__}"
        )
    model = copy.deepcopy(model)
    use_handles = any(_numeric_debug_handle(n) is not None for n in model.graph.nodes)
    last_node: dict[DebugKey, Node] = {}
    for node in model.graph.nodes:
        key = get_debug_key(node, use_handles=use_handles)
        if key is not None:
            last_node[key] = node  # later nodes (the op's q/dq) replace earlier ones
    for key, node in last_node.items():
        _insert_logger(model, node, key)
    model.graph.lint()
    model.recompile()
    return model


def extract_results_from_loggers(model: GraphModule) -> LoggedResults:
    """``{debug key: (node name, nn_module_stack, logged values)}`` from the loggers of a model
    returned by :func:`prepare_for_propagation_comparison` (loggers that saw nothing are left
    out)."""
    results: LoggedResults = {}
    for module in model.children():
        if isinstance(module, OutputLogger) and module.stats:
            results[module.debug_handle] = (module.node_name, module.nn_module_stack, module.stats)
    return results


def _sqnr_tensor(actual: Tensor, ref: Tensor) -> Tensor:
    # upstream's argument order: the actual output is the signal, actual - ref the noise
    return torch.tensor(_sqnr(actual, ref))


def _loss_tree(loss: Callable[[Tensor, Tensor], Tensor], actual: object, ref: object) -> object:
    """``loss`` applied leaf by leaf over matching (nested) tensors, lists, tuples and dicts."""
    if isinstance(actual, Tensor) and isinstance(ref, Tensor):
        return loss(actual.float(), ref.float())
    if isinstance(actual, (list, tuple)) and isinstance(ref, (list, tuple)):
        return type(actual)(_loss_tree(loss, a, r) for a, r in zip(actual, ref))
    if isinstance(actual, dict) and isinstance(ref, dict):
        return {k: _loss_tree(loss, v, ref[k]) for k, v in actual.items()}
    return None


def _same_shapes(actual: object, ref: object) -> bool:
    if isinstance(actual, Tensor) and isinstance(ref, Tensor):
        return actual.shape == ref.shape
    if isinstance(actual, (list, tuple)) and isinstance(ref, (list, tuple)):
        return len(actual) == len(ref) and all(_same_shapes(a, r) for a, r in zip(actual, ref))
    if isinstance(actual, dict) and isinstance(ref, dict):
        return actual.keys() == ref.keys() and all(_same_shapes(v, ref[k]) for k, v in actual.items())
    return type(actual) is type(ref) and bool(actual == ref)


@dataclass(frozen=True)
class QuantizationComparisonResult:
    """One logged output of the quantized model (``actual``) against the float one (``ref``)."""

    actual: Any
    ref: Any

    def __post_init__(self) -> None:
        for name in ("actual", "ref"):
            if not isinstance(getattr(self, name), (Tensor, list, tuple, dict)):
                raise TypeError(f"{name} must be a Tensor, list, tuple or dict, got {type(getattr(self, name)).__name__}")
        if not _same_shapes(self.actual, self.ref):
            raise ValueError("cannot compare outputs of different shapes/structure: "
                             f"actual {_describe(self.actual)} vs ref {_describe(self.ref)}")

    @property
    def mse_loss(self) -> object:
        """Mean squared error (same structure as the outputs)."""
        return self.loss(torch.nn.functional.mse_loss)

    @property
    def sqnr(self) -> object:
        """SQNR in dB (same structure as the outputs; ``inf`` where equal)."""
        return self.loss(_sqnr_tensor)

    def loss(self, loss_function: Callable[[Tensor, Tensor], Tensor]) -> object:
        """``loss_function(actual, ref)`` leaf by leaf."""
        return _loss_tree(loss_function, self.actual, self.ref)

    def __repr__(self) -> str:  # the tensors themselves are too big to print
        return f"QuantizationComparisonResult(mse_loss={self.mse_loss}, sqnr={self.sqnr})"


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"Tensor{tuple(x.shape)}"
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__}[{', '.join(_describe(e) for e in x)}]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in x.items()) + "}"
    return repr(x)


@dataclass(frozen=True, kw_only=True)
class NodeAccuracySummary:
    """The comparisons for one debug key, with the nodes logged on either side."""

    handle: DebugKey
    actual_node_name: str
    actual_module_stack: str
    ref_node_name: str
    ref_module_stack: str
    results: Sequence[QuantizationComparisonResult]

    @property
    def debug_info(self) -> DebugKey:
        """The newer upstream name for :attr:`handle`."""
        return self.handle


def _module_stack_to_str(module_stack: object) -> str:
    """``{"L__self__": ("", cls), "L__self__.conv": ("conv", cls)}`` -> ``"conv"`` (the
    innermost owning module's path)."""
    if isinstance(module_stack, dict) and module_stack:
        return str(list(module_stack.values())[-1][0])
    return str(module_stack)


def compare_results(ref_results: LoggedResults, actual_results: LoggedResults) -> dict[DebugKey, NodeAccuracySummary]:
    """Per debug key present in both, compare the logged values pairwise (one
    :class:`QuantizationComparisonResult` per forward call): SQNR, MSE or any loss."""
    comparisons: dict[DebugKey, NodeAccuracySummary] = {}
    for key, (ref_name, ref_stack, ref_stats) in ref_results.items():
        if key not in actual_results:
            log.debug("debug key %s has no counterpart in the compared model", key)
            continue
        actual_name, actual_stack, actual_stats = actual_results[key]
        try:
            results = [QuantizationComparisonResult(actual=a, ref=r) for a, r in zip(actual_stats, ref_stats)]
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"debug key {key}: cannot compare ref node {ref_name} with actual node {actual_name}"
            ) from e
        comparisons[key] = NodeAccuracySummary(
            handle=key,
            actual_node_name=actual_name or "",
            actual_module_stack=_module_stack_to_str(actual_stack),
            ref_node_name=ref_name or "",
            ref_module_stack=_module_stack_to_str(ref_stack),
            results=results,
        )
    return comparisons
