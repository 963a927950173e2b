"""Quantization specs, annotations and the ``Quantizer`` interface (the PT2E contract).

A quantizer *annotates* a captured graph: for each node it states which of its input edges
and whether its output get quantized, and how (a spec). The engine turns those annotations
into observers (:mod:`fxquant.engine`). Annotations live in
``node.meta["quantization_annotation"]`` as :class:`QuantizationAnnotation` objects, the
convention every PT2E quantizer (torchao's, ExecuTorch's, ...) follows.

The spec classes keep upstream's field order, so positional construction keeps working;
they are frozen and validate themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.fx import GraphModule, Node

from fxquant.numerics.dtypes import SUPPORTED_QDTYPES

__all__ = [
    "DerivedQuantizationSpec",
    "EdgeOrNode",
    "FixedQParamsQuantizationSpec",
    "ObserverOrFakeQuantizeConstructor",
    "QuantizationAnnotation",
    "QuantizationSpec",
    "QuantizationSpecBase",
    "Quantizer",
    "SharedQuantizationSpec",
]

# An input edge (producer, consumer) or a node's output.
EdgeOrNode = tuple[Node, Node] | Node

# A class or a ``with_args`` factory that builds an observer or a fake-quantizer.
ObserverOrFakeQuantizeConstructor = Callable[..., Any]

_FLOAT_PASSTHROUGH = frozenset({torch.float32})


class QuantizationSpecBase(ABC):  # a marker base, as upstream's
    """Base of the spec types; a spec says how one edge or node output is quantized."""


def _check_dtype(dtype: torch.dtype, owner: str) -> None:
    if dtype not in SUPPORTED_QDTYPES and dtype not in _FLOAT_PASSTHROUGH:
        raise ValueError(f"{owner}: unsupported dtype {dtype}")


def _check_range(quant_min: int | None, quant_max: int | None, owner: str) -> None:
    if quant_min is not None and quant_max is not None and quant_min > quant_max:
        raise ValueError(f"{owner}: quant_min ({quant_min}) must be <= quant_max ({quant_max})")


@dataclass(eq=True, frozen=True)
class QuantizationSpec(QuantizationSpecBase):
    """Quantize with an observer (PTQ) or fake-quantizer (QAT) built by
    ``observer_or_fake_quant_ctr``; the other fields are passed to it (when set) and say
    what the quantized tensor looks like.

    >>> QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
    ...                  qscheme=torch.per_tensor_affine,
    ...                  observer_or_fake_quant_ctr=HistogramObserver.with_args(eps=2**-12))
    """

    dtype: torch.dtype
    observer_or_fake_quant_ctr: ObserverOrFakeQuantizeConstructor
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    ch_axis: int | None = None
    is_dynamic: bool = False

    def __post_init__(self) -> None:
        _check_dtype(self.dtype, "QuantizationSpec")
        _check_range(self.quant_min, self.quant_max, "QuantizationSpec")
        if self.ch_axis is not None and self.ch_axis < 0:
            raise ValueError(f"QuantizationSpec: ch_axis must be >= 0, got {self.ch_axis}")


@dataclass(eq=True, frozen=True)
class FixedQParamsQuantizationSpec(QuantizationSpecBase):
    """Quantize with fixed ``scale``/``zero_point`` (ops with a known output range, such as
    sigmoid [0, 1] or tanh [-1, 1])."""

    dtype: torch.dtype
    scale: float
    zero_point: int
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    is_dynamic: bool = False

    def __post_init__(self) -> None:
        _check_dtype(self.dtype, "FixedQParamsQuantizationSpec")
        _check_range(self.quant_min, self.quant_max, "FixedQParamsQuantizationSpec")
        if not self.scale > 0:
            raise ValueError(f"FixedQParamsQuantizationSpec: scale must be > 0, got {self.scale}")


@dataclass(eq=True, frozen=True)
class SharedQuantizationSpec(QuantizationSpecBase):
    """Share the observer (and so the quantization parameters) of another edge or node
    output. Sharing is transitive: everything connected by sharing gets one observer."""

    edge_or_node: EdgeOrNode


@dataclass(eq=True, frozen=True)
class DerivedQuantizationSpec(QuantizationSpecBase):
    """Parameters computed from other edges' observers by ``derive_qparams_fn`` — e.g. a
    bias's scale as input scale × weight scale."""

    derived_from: list[EdgeOrNode]
    derive_qparams_fn: Callable[[list[Any]], tuple[Tensor, Tensor]]
    dtype: torch.dtype
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    ch_axis: int | None = None
    is_dynamic: bool = False

    def __post_init__(self) -> None:
        _check_dtype(self.dtype, "DerivedQuantizationSpec")
        _check_range(self.quant_min, self.quant_max, "DerivedQuantizationSpec")
        if not self.derived_from:
            raise ValueError("DerivedQuantizationSpec: derived_from must name at least one edge or node")

    def __hash__(self) -> int:  # derived_from is a list; hash by identity of the spec
        return id(self)


@dataclass
class QuantizationAnnotation:
    """How a node's inputs and output are quantized.

    ``input_qspec_map`` maps an input node (an argument of the annotated node) to the spec of
    that edge; ``output_qspec`` covers the node's output. ``allow_implicit_sharing`` lets an
    input edge reuse its producer's output observer when both quantize the same way.
    ``_annotated`` marks a node as claimed, so later quantizers leave it alone.
    """

    input_qspec_map: dict[Node, QuantizationSpecBase | None] = field(default_factory=dict)
    output_qspec: QuantizationSpecBase | None = None
    allow_implicit_sharing: bool = True
    _annotated: bool = False


class Quantizer(ABC):
    """Decides, for a captured graph, which tensors get which quantization.

    Subclasses implement :meth:`annotate` (write :class:`QuantizationAnnotation` objects into
    ``node.meta["quantization_annotation"]``) and :meth:`validate` (check the annotated graph
    can be lowered); :meth:`transform_for_annotation` may rewrite the graph first (e.g.
    decompose an op so it can be annotated).
    """

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        return model

    @abstractmethod
    def annotate(self, model: GraphModule) -> GraphModule: ...

    @abstractmethod
    def validate(self, model: GraphModule) -> None: ...

    def prepare_obs_or_fq_callback(
        self, model: GraphModule, edge_or_node_to_obs_or_fq: dict[EdgeOrNode, Any]
    ) -> None:
        """Called after observers are created and before they are inserted: a quantizer may
        adjust them (e.g. make two observers share statistics). The default does nothing."""
        return
