"""Fuser methods the ready backend configs use, beyond those of :mod:`fxquant.eager.fuser_methods`.

A fuser method takes ``(is_qat, *modules)`` in the pattern's forward order and returns the
fused module.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["sequential_fuser"]


def sequential_fuser(fused_class: type[nn.Module]) -> Callable[..., nn.Module]:
    """A fuser method that puts two modules into ``fused_class`` as they are (the same for
    post-training quantization and QAT), e.g. ``sequential_fuser(nni.LinearReLU)``."""

    def fuse(is_qat: bool, first: nn.Module, second: nn.Module) -> nn.Module:
        del is_qat  # a plain container is the same for both flows
        return fused_class(first, second)

    fuse.__name__ = f"fuse_into_{fused_class.__name__}"
    fuse.__qualname__ = fuse.__name__
    return fuse
