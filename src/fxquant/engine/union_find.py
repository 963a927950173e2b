"""Disjoint sets, for grouping edges and node outputs that share one observer."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["UnionFind"]

K = TypeVar("K", bound=Hashable)


class UnionFind(Generic[K]):
    """Union by size with path compression; ``find`` adds unseen keys as singletons."""

    def __init__(self, keys: Iterable[K] = ()) -> None:
        self._parent: dict[K, K] = {}
        self._size: dict[K, int] = {}
        for k in keys:
            self.find(k)

    def find(self, key: K) -> K:
        if key not in self._parent:
            self._parent[key] = key
            self._size[key] = 1
            return key
        root = key
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[key] != root:  # compress the path
            self._parent[key], key = root, self._parent[key]
        return root

    def union(self, a: K, b: K) -> K:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]
        return ra

    def groups(self) -> dict[K, list[K]]:
        """Root -> members, members in insertion order."""
        out: dict[K, list[K]] = {}
        for key in self._parent:
            out.setdefault(self.find(key), []).append(key)
        return out
