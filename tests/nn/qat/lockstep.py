"""Train an fxquant QAT module and its upstream twin side by side (importable as
``nn.qat.lockstep``): every step must give identical outputs, input and parameter gradients,
and parameters after an SGD update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _named_grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def assert_train_lockstep(
    ours: nn.Module,
    theirs: nn.Module,
    make_input: Callable[[int], torch.Tensor],
    *,
    steps: int = 3,
    lr: float = 0.05,
) -> None:
    """Run ``steps`` SGD steps on both modules with the same inputs and compare."""
    opt_ours = torch.optim.SGD(ours.parameters(), lr=lr)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=lr)
    for step in range(steps):
        x = make_input(step)
        x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
        assert torch.equal(y_ours, y_theirs), f"outputs differ at step {step}"
        weight = torch.linspace(-1.0, 1.0, y_ours.numel()).reshape(y_ours.shape)
        (y_ours * weight).sum().backward()
        (y_theirs * weight).sum().backward()
        assert torch.equal(x_ours.grad, x_theirs.grad), f"input gradients differ at step {step}"
        grads_ours, grads_theirs = _named_grads(ours), _named_grads(theirs)
        assert grads_ours.keys() == grads_theirs.keys()
        for name, grad in grads_ours.items():
            assert torch.equal(grad, grads_theirs[name]), f"grad of {name} differs at {step}"
        opt_ours.step()
        opt_theirs.step()
        opt_ours.zero_grad()
        opt_theirs.zero_grad()
    state_ours, state_theirs = ours.state_dict(), theirs.state_dict()
    assert list(state_ours) == list(state_theirs)
    for key, value in state_ours.items():
        assert torch.equal(value, state_theirs[key]), f"{key} differs after training"
