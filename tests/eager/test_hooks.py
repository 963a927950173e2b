"""Observer hooks: called first, recognised and removed without touching user hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxquant
from fxquant.eager.hooks import is_observer_hook, register_observer_hook, remove_observer_hooks


@pytest.mark.parametrize("pre_hook", [False, True], ids=["post", "pre"])
def test_observer_runs_before_user_hooks_and_is_removed_alone(pre_hook):
    module = nn.Linear(3, 3)
    order = []
    module.register_forward_pre_hook(lambda m, i: order.append("user-pre"))
    module.register_forward_hook(lambda m, i, o: order.append("user-post"))
    module.activation_post_process = fxquant.MinMaxObserver()
    register_observer_hook(module, pre_hook=pre_hook)
    hooks = module._forward_pre_hooks if pre_hook else module._forward_hooks
    assert is_observer_hook(next(iter(hooks.values())))  # first in line
    module(torch.randn(2, 3))
    assert torch.isfinite(module.activation_post_process.min_val)
    remove_observer_hooks(module)
    assert not any(is_observer_hook(h) for h in [*module._forward_pre_hooks.values(),
                                                 *module._forward_hooks.values()])
    order.clear()
    module(torch.randn(2, 3))
    assert order == ["user-pre", "user-post"]


def test_registering_without_observer_is_explained():
    with pytest.raises(AttributeError, match="activation_post_process"):
        register_observer_hook(nn.Linear(2, 2))
