"""Run several quantizers in order on one graph."""

from __future__ import annotations

from torch.fx import GraphModule

from fxquant.pt2e.quantizer.quantizer import QuantizationAnnotation, Quantizer
from fxquant.pt2e.quantizer.utils import ANNOTATION_KEY

__all__ = ["ComposableQuantizer", "QuantizerConflictError"]


class QuantizerConflictError(RuntimeError):
    """A quantizer changed an annotation that an earlier quantizer had made."""


class ComposableQuantizer(Quantizer):
    """Apply ``quantizers`` in order; the first to claim a node wins.

    Each quantizer must leave earlier quantizers' annotations alone (check
    ``is_annotated`` before annotating); a quantizer that rewrites one is an error naming
    the node and both quantizers.

    >>> quantizer = ComposableQuantizer([EmbeddingQuantizer(), XNNPACKQuantizer().set_global(cfg)])
    """

    def __init__(self, quantizers: list[Quantizer]) -> None:
        super().__init__()
        self.quantizers = quantizers

    def annotate(self, model: GraphModule) -> GraphModule:
        # node name -> (the quantizer that annotated it, its annotation, a snapshot of it)
        owner: dict[str, tuple[Quantizer, QuantizationAnnotation, tuple]] = {}
        for quantizer in self.quantizers:
            quantizer.annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get(ANNOTATION_KEY)
                if annotation is None:
                    continue
                if node.name not in owner:
                    owner[node.name] = (quantizer, annotation, _snapshot(annotation))
                    continue
                first, first_annotation, snapshot = owner[node.name]
                if annotation is not first_annotation or _snapshot(annotation) != snapshot:
                    raise QuantizerConflictError(
                        f"{type(quantizer).__name__} changed the annotation of node "
                        f"{node.format_node()} made by {type(first).__name__}; a quantizer "
                        "must skip nodes that are already annotated (see is_annotated)"
                    )
        return model

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        for quantizer in self.quantizers:
            model = quantizer.transform_for_annotation(model)
        return model

    def validate(self, model: GraphModule) -> None:
        for quantizer in self.quantizers:
            quantizer.validate(model)


def _snapshot(annotation: QuantizationAnnotation) -> tuple:
    return (
        tuple((n.name, id(q)) for n, q in annotation.input_qspec_map.items()),
        id(annotation.output_qspec),
        annotation.allow_implicit_sharing,
    )
