"""Helpers for quantizer authors: read and write a node's annotation, filter nodes by the
module they came from."""

from __future__ import annotations

from collections.abc import Callable

from torch.fx import Node

from fxquant.pt2e.quantizer.quantizer import QuantizationAnnotation, QuantizationSpecBase

__all__ = [
    "ANNOTATION_KEY",
    "annotate_input_qspec_map",
    "annotate_output_qspec",
    "get_annotation",
    "get_module_name_filter",
    "is_annotated",
    "mark_nodes_as_annotated",
    "module_path",
    "module_paths",
    "set_annotation",
]

# The metadata key every PT2E tool reads.
ANNOTATION_KEY = "quantization_annotation"


def get_annotation(node: Node) -> QuantizationAnnotation | None:
    """The node's annotation, or None."""
    return node.meta.get(ANNOTATION_KEY)


def set_annotation(node: Node, annotation: QuantizationAnnotation) -> None:
    node.meta[ANNOTATION_KEY] = annotation


def _annotation_for_update(node: Node) -> QuantizationAnnotation:
    annotation = get_annotation(node)
    if annotation is None:
        annotation = QuantizationAnnotation()
        set_annotation(node, annotation)
    return annotation


def annotate_input_qspec_map(node: Node, input_node: Node, qspec: QuantizationSpecBase | None) -> None:
    """Quantize the edge ``input_node -> node`` with ``qspec``."""
    if input_node not in node.all_input_nodes:
        raise ValueError(
            f"cannot annotate edge {input_node.format_node()} -> {node.format_node()}: "
            f"{input_node.name} is not an input of {node.name}"
        )
    _annotation_for_update(node).input_qspec_map[input_node] = qspec


def annotate_output_qspec(node: Node, qspec: QuantizationSpecBase | None) -> None:
    """Quantize ``node``'s output with ``qspec``."""
    _annotation_for_update(node).output_qspec = qspec


def is_annotated(nodes: list[Node] | Node) -> bool:
    """True if any of ``nodes`` was already claimed by a quantizer."""
    group = nodes if isinstance(nodes, list) else [nodes]
    return any(
        (ann := get_annotation(n)) is not None and ann._annotated for n in group
    )


def mark_nodes_as_annotated(nodes: list[Node]) -> None:
    """Claim ``nodes`` so that later quantizers do not annotate them again."""
    for n in nodes:
        _annotation_for_update(n)._annotated = True


def get_module_name_filter(module_name: str) -> Callable[[Node], bool]:
    """A predicate: was this node produced inside the module ``module_name`` (a fully
    qualified name such as ``"blocks.0.conv"``)?

    >>> is_in_classifier = get_module_name_filter("classifier")
    """

    def module_name_filter(n: Node) -> bool:
        return module_name in module_paths(n)

    return module_name_filter


def module_paths(node: Node) -> list[str]:
    """The fully qualified names of the modules whose forward created ``node``, outermost
    first (``node.meta["nn_module_stack"]``: ``{key: (qualified name, type)}``, which
    ``torch.export`` records)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [str(path) for path, _ in stack.values()]


def module_path(node: Node) -> str:
    """The fully qualified name of the innermost module that created ``node`` ("" for the
    model's own forward)."""
    paths = module_paths(node)
    return paths[-1] if paths else ""
