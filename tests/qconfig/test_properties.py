"""assert_valid_qconfig, activation_is_memoryless, is_reuse_input_qconfig against upstream."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch.ao.quantization.qconfig as upstream_qconfig
from torch import nn

import fxquant.qconfig.defaults as ours_defaults
from fxquant.qconfig import (
    QConfig,
    UnsupportedQConfigError,
    activation_is_memoryless,
    assert_valid_qconfig,
    get_default_qat_qconfig,
    is_reuse_input_qconfig,
)

NAMES = sorted(n for n in ours_defaults.__all__ if hasattr(upstream_qconfig, n))
MODULES = {
    "conv-transpose-1d": nn.ConvTranspose1d(2, 2, 1),
    "conv-transpose-2d": nn.ConvTranspose2d(2, 2, 1),
    "conv-transpose-3d": nn.ConvTranspose3d(2, 2, 1),
    "conv2d": nn.Conv2d(2, 2, 1),
    "linear": nn.Linear(2, 2),
}


def _raises(fn: Any, *args: Any) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn(*args)
        except AssertionError:
            return True
    return False


@pytest.mark.parametrize("module_id", list(MODULES), ids=list(MODULES))
@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_assert_valid_qconfig_agrees_with_upstream(name: str, module_id: str) -> None:
    module = MODULES[module_id]
    ours = _raises(assert_valid_qconfig, getattr(ours_defaults, name), module)
    upstream = _raises(
        upstream_qconfig._assert_valid_qconfig, getattr(upstream_qconfig, name), module
    )
    assert ours == upstream


def test_per_channel_weights_on_conv_transpose_are_rejected_with_a_remedy() -> None:
    with pytest.raises(
        UnsupportedQConfigError, match="ConvTranspose2d.*per-tensor weight observer"
    ):
        assert_valid_qconfig(
            ours_defaults.default_per_channel_qconfig, MODULES["conv-transpose-2d"]
        )
    assert_valid_qconfig(ours_defaults.default_qconfig, MODULES["conv-transpose-2d"])
    assert_valid_qconfig(None, MODULES["conv-transpose-2d"])
    assert_valid_qconfig(
        QConfig(ours_defaults.default_qconfig.activation, None), MODULES["conv-transpose-2d"]
    )


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_activation_is_memoryless_agrees_with_upstream(name: str) -> None:
    ours, upstream = getattr(ours_defaults, name), getattr(upstream_qconfig, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert activation_is_memoryless(ours) == upstream_qconfig._activation_is_memoryless(
            upstream
        )


def test_dynamic_qat_activation_is_memoryless() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert activation_is_memoryless(ours_defaults.default_dynamic_qat_qconfig)
        assert not activation_is_memoryless(get_default_qat_qconfig("x86"))


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_is_reuse_input_qconfig_agrees_with_upstream(name: str) -> None:
    ours, upstream = getattr(ours_defaults, name), getattr(upstream_qconfig, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _safe(is_reuse_input_qconfig, ours)
        want = _safe(upstream_qconfig._is_reuse_input_qconfig, upstream)
    assert got == want
    assert (got is True) == (name == "default_reuse_input_qconfig")


def _safe(fn: Any, qconfig: Any) -> Any:
    # a qconfig whose weight is None cannot be built; both sides then raise TypeError
    try:
        return fn(qconfig)
    except TypeError:
        return "TypeError"
