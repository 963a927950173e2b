"""Shared helpers: run an fxquant fake-quantizer and its upstream twin on the same batches
and require identical outputs, parameters and gradients."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn


def make_batches(shape: tuple[int, ...], seed: int = 0) -> Iterator[torch.Tensor]:
    """Batches that move the range around: plain, wide, with an outlier, one-signed, flat."""
    g = torch.Generator().manual_seed(seed)
    yield torch.randn(shape, generator=g)
    yield 5.0 * torch.randn(shape, generator=g)
    x = torch.randn(shape, generator=g)
    x.view(-1)[0] = 60.0  # outlier
    yield x
    yield torch.rand(shape, generator=g) + 0.5  # strictly positive
    yield torch.full(shape, -0.25)  # constant
    yield 1e-3 * torch.randn(shape, generator=g)  # tiny


def assert_modules_agree(
    ours: nn.Module,
    theirs: nn.Module,
    batches: Iterator[torch.Tensor],
    *,
    buffers: tuple[str, ...] = ("scale", "zero_point"),
) -> int:
    """Feed each batch to both modules; outputs, input gradients and the named buffers must
    be bit-identical after every step. Returns the number of batches compared."""
    n = 0
    for x in batches:
        x_ours = x.clone().requires_grad_()
        x_theirs = x.clone().requires_grad_()
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
        # a non-uniform upstream gradient exercises the straight-through mask
        weight = torch.linspace(-1.0, 2.0, x.numel()).reshape(x.shape)
        (y_ours * weight).sum().backward()
        (y_theirs * weight).sum().backward()
        assert torch.equal(y_ours, y_theirs), f"outputs differ on batch {n}"
        assert torch.equal(x_ours.grad, x_theirs.grad), f"input gradients differ on batch {n}"
        for name in buffers:
            a, b = getattr(ours, name), getattr(theirs, name)
            assert a.dtype == b.dtype, f"{name} dtype {a.dtype} != upstream {b.dtype}"
            assert torch.equal(a, b), f"{name} differs on batch {n}: {a} vs {b}"
        n += 1
    return n


@pytest.fixture
def batches() -> Callable[..., Iterator[torch.Tensor]]:
    return make_batches


@pytest.fixture
def agree() -> Callable[..., int]:
    return assert_modules_agree


@pytest.fixture(autouse=True)
def _quiet_expected_warnings() -> Iterator[None]:
    """Upstream's (the oracle's) deprecation notices and the "no data yet" warnings of both
    libraries are expected noise here; tests that check a warning use pytest.warns."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", message=".*must run observer before calling.*")
        warnings.filterwarnings("ignore", message=".*before the observer saw any data.*")
        warnings.filterwarnings("ignore", message=".*reduce_range.*deprecated.*")
        warnings.filterwarnings("ignore", message=".*Please use quant_min and quant_max.*")
        yield
