"""Planning: which edges and node outputs get observed, and which share one observer.

Pure analysis of an annotated graph (nothing is mutated). Every annotated edge
``(producer, consumer)`` and node output is a *site*; sites are joined into groups when

- a ``SharedQuantizationSpec`` points one site at another (sharing is transitive), or
- implicitly, when an input edge quantizes exactly like its producer's output (same dtype,
  range, scheme, axis, dynamism, fixed parameters) — then the edge reuses the producer's
  observer instead of quantizing twice — and likewise with the producer's other users.

Each group gets one observer, built from the group's *root spec*: the first non-shared spec
among its members, node outputs before edges, in graph order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from fxquant.engine.errors import AnnotationError
from fxquant.engine.union_find import UnionFind
from fxquant.pt2e.quantizer.quantizer import (
    DerivedQuantizationSpec,
    EdgeOrNode,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from fxquant.pt2e.quantizer.utils import get_annotation

__all__ = [
    "ObserverGroup", "ObserverPlan", "RootSpec", "collect_site_specs", "is_tensor_node", "plan_observers", "site_name",
]

RootSpec = QuantizationSpec | FixedQParamsQuantizationSpec | DerivedQuantizationSpec

# Attributes two specs must agree on for an edge to reuse its producer's observer.
_SHARING_ATTRS = ("dtype", "is_dynamic", "quant_min", "quant_max", "qscheme", "ch_axis", "scale", "zero_point")


def site_name(site: EdgeOrNode) -> str:
    return f"{site[0].name}->{site[1].name}" if isinstance(site, tuple) else site.name


@dataclass(frozen=True, kw_only=True)
class ObserverGroup:
    """Sites observed by one observer built from ``spec``."""

    index: int
    spec: RootSpec
    members: tuple[EdgeOrNode, ...]

    def __str__(self) -> str:
        kind = type(self.spec).__name__
        dtype = getattr(self.spec, "dtype", None)
        return f"group {self.index} [{kind} {dtype}]: " + ", ".join(map(site_name, self.members))


@dataclass(frozen=True, kw_only=True)
class ObserverPlan:
    """The result of planning: groups of sites, and each site's group."""

    groups: tuple[ObserverGroup, ...]
    group_of: dict[EdgeOrNode, int]

    def __str__(self) -> str:
        return "\n".join(str(g) for g in self.groups) or "(nothing to observe)"


def plan_observers(gm: GraphModule) -> ObserverPlan:
    """Read every node's annotation and group the sites; raise :class:`AnnotationError` for an
    annotation that refers to a missing edge or an unannotated shared site."""
    site_spec = collect_site_specs(gm)
    uf: UnionFind[EdgeOrNode] = UnionFind(site_spec)
    for site, spec in site_spec.items():
        if isinstance(spec, SharedQuantizationSpec):
            target = spec.edge_or_node
            if target not in site_spec:
                raise AnnotationError(
                    f"{site_name(site)} shares its quantization with {site_name(target)}, "
                    "which is not annotated; annotate it or use a QuantizationSpec"
                )
            uf.union(target, site)
    _join_implicit_sharing(site_spec, uf)
    return _build_plan(gm, site_spec, uf)


def collect_site_specs(gm: GraphModule) -> dict[EdgeOrNode, QuantizationSpecBase]:
    """Every annotated site of ``gm`` — input edges ``(producer, consumer)`` and node outputs —
    with its spec; an annotation of an edge that does not exist raises ``AnnotationError``."""
    site_spec: dict[EdgeOrNode, QuantizationSpecBase] = {}
    for node in gm.graph.nodes:
        annotation = get_annotation(node)
        if annotation is None:
            continue
        for input_node, spec in annotation.input_qspec_map.items():
            if input_node not in node.all_input_nodes:
                raise AnnotationError(
                    f"annotation of {node.format_node()} quantizes an input "
                    f"{getattr(input_node, 'name', input_node)!s} that is not one of its "
                    "arguments; annotate an edge that exists"
                )
            if spec is not None:
                site_spec[(input_node, node)] = spec
        if annotation.output_qspec is not None:
            site_spec[node] = annotation.output_qspec
    return site_spec


def _root_spec(
    site: EdgeOrNode, site_spec: dict[EdgeOrNode, QuantizationSpecBase]
) -> QuantizationSpecBase:
    seen: set[EdgeOrNode] = set()
    spec = site_spec[site]
    while isinstance(spec, SharedQuantizationSpec):
        if spec.edge_or_node in seen:
            raise AnnotationError(f"shared quantization specs form a cycle at {site_name(site)}")
        seen.add(spec.edge_or_node)
        spec = site_spec[spec.edge_or_node]
    return spec


def _same_quantization(a: QuantizationSpecBase, b: QuantizationSpecBase) -> bool:
    if isinstance(a, (SharedQuantizationSpec, DerivedQuantizationSpec)) or isinstance(
        b, (SharedQuantizationSpec, DerivedQuantizationSpec)
    ):
        return False
    return all(getattr(a, attr, None) == getattr(b, attr, None) for attr in _SHARING_ATTRS)


def _join_implicit_sharing(
    site_spec: dict[EdgeOrNode, QuantizationSpecBase], uf: UnionFind[EdgeOrNode]
) -> None:
    for site, _ in list(site_spec.items()):
        if not isinstance(site, tuple):
            continue
        producer, consumer = site
        annotation = get_annotation(consumer)
        if annotation is None or not annotation.allow_implicit_sharing:
            continue
        edge_root = _root_spec(site, site_spec)
        # with the producer's other users first, then with the producer's output
        candidates: list[EdgeOrNode] = [(producer, u) for u in producer.users if u is not consumer]
        candidates.append(producer)
        for other in candidates:
            if other in site_spec and _same_quantization(edge_root, _root_spec(other, site_spec)):
                uf.union(other, site)


def _build_plan(
    gm: GraphModule, site_spec: dict[EdgeOrNode, QuantizationSpecBase], uf: UnionFind[EdgeOrNode]
) -> ObserverPlan:
    position = {n: i for i, n in enumerate(gm.graph.nodes)}

    def order(site: EdgeOrNode) -> tuple[int, int, int]:
        if isinstance(site, tuple):
            return (1, position[site[1]], position[site[0]])
        return (0, position[site], 0)

    groups: list[ObserverGroup] = []
    group_of: dict[EdgeOrNode, int] = {}
    members_by_root = uf.groups()
    for members in sorted(members_by_root.values(), key=lambda ms: min(order(m) for m in ms)):
        members.sort(key=order)
        root = next(site_spec[m] for m in members if not isinstance(site_spec[m], SharedQuantizationSpec))
        if not isinstance(root, (QuantizationSpec, FixedQParamsQuantizationSpec, DerivedQuantizationSpec)):
            raise AnnotationError(f"unsupported spec type {type(root).__name__} at {site_name(members[0])}")
        group = ObserverGroup(index=len(groups), spec=root, members=tuple(members))
        groups.append(group)
        for m in members:
            group_of[m] = group.index
    return ObserverPlan(groups=tuple(groups), group_of=group_of)


def is_tensor_node(node: Node) -> bool:
    """Whether a node produces a tensor (only tensors are observed)."""
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor)
