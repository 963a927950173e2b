"""qconfig_on_module_device: observers built where the module lives, as upstream."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

from fxquant.observers.misc import NoopObserver
from fxquant.qconfig import (
    QConfig,
    default_qat_qconfig,
    default_qconfig,
    qconfig_equals,
    qconfig_on_module_device,
)


@pytest.mark.filterwarnings("ignore:reduce_range is deprecated")
def test_observers_follow_the_module_device() -> None:
    module = nn.Linear(2, 2, device="meta")
    for qconfig in (default_qconfig, default_qat_qconfig):
        placed = qconfig_on_module_device(qconfig, module)
        assert qconfig_equals(placed, qconfig)  # same constructor, only a callable arg added
        built = placed.activation()
        # a fake-quantizer forwards factory_kwargs to its observer (its own switches stay put)
        observer = getattr(built, "activation_post_process", built)
        buffers = list(observer.buffers())
        assert buffers and all(b.device.type == "meta" for b in buffers)
        # upstream does the same
        up_placed = tq.qconfig._add_module_to_qconfig_obs_ctr(
            tq.QConfig(type(observer), None), module
        )
        assert all(b.device.type == "meta" for b in up_placed.activation().buffers())


def test_unchanged_without_module_qconfig_or_factory_kwargs() -> None:
    assert qconfig_on_module_device(default_qconfig, None) is default_qconfig
    assert qconfig_on_module_device(None, nn.Linear(2, 2)) is None
    qconfig = QConfig(activation=nn.Identity, weight=NoopObserver)  # neither takes factory_kwargs
    placed = qconfig_on_module_device(qconfig, nn.Linear(2, 2))
    assert placed.activation is nn.Identity and placed.weight is NoopObserver


def test_parameterless_module_builds_on_the_default_device() -> None:
    placed = qconfig_on_module_device(default_qconfig, nn.ReLU())
    assert all(b.device == torch.device("cpu") for b in placed.activation().buffers())
