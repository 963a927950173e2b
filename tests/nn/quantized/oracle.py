"""Shared oracle helpers for the quantized-module tests: build the same observed float module
twice (fxquant qconfig / upstream qconfig), convert with both libraries, compare."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.ao.quantization as tq

import fxquant
import fxquant.nn.quantized as fnnq

ENGINES = [e for e in ("x86", "qnnpack") if e in torch.backends.quantized.supported_engines]

# (id, fxquant qconfig, upstream qconfig): MinMax activations so that both libraries pick the
# same output qparams (the histogram observer is deliberately different in fxquant).
QCONFIGS = [
    ("per_tensor", fxquant.default_qconfig, tq.default_qconfig),
    ("per_channel", fxquant.default_per_channel_qconfig, tq.default_per_channel_qconfig),
]
QCONFIG_IDS = [q[0] for q in QCONFIGS]


@contextlib.contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    """Run the block with ``torch.backends.quantized.engine = engine``."""
    saved = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = saved


def observe(module: torch.nn.Module, qconfig: Any, *calib: Any) -> torch.nn.Module:
    """Attach ``qconfig`` (to every submodule, as prepare does) and an output observer, then
    run ``calib`` through it once."""
    module.apply(lambda m: setattr(m, "qconfig", qconfig))
    module.activation_post_process = qconfig.activation()
    module.activation_post_process(module(*calib))
    return module


def observed_pair(
    make_float: Callable[[], torch.nn.Module], ours_qconfig: Any, theirs_qconfig: Any, *calib: Any
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two identical float modules, observed with fxquant's and upstream's qconfig."""
    base = make_float()
    return (
        observe(copy.deepcopy(base), ours_qconfig, *calib),
        observe(copy.deepcopy(base), theirs_qconfig, *calib),
    )


def quantize_input(x: torch.Tensor, dtype: torch.dtype = torch.quint8) -> torch.Tensor:
    """Per-tensor quantization of ``x`` over its own range."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = max((hi - lo) / 255.0, 1e-6)
    zero_point = round(-lo / scale) if dtype == torch.quint8 else 0
    return torch.quantize_per_tensor(x, scale, min(max(zero_point, 0), 255), dtype)


def assert_same_qtensor(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit-exact equality of two quantized (or float) tensors, qparams included."""
    assert a.shape == b.shape
    if not a.is_quantized:
        assert not b.is_quantized
        assert torch.equal(a, b)
        return
    assert b.is_quantized and a.qscheme() == b.qscheme() and a.dtype == b.dtype
    assert torch.equal(a.int_repr(), b.int_repr())
    if a.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        assert a.q_scale() == b.q_scale() and a.q_zero_point() == b.q_zero_point()
    else:
        assert torch.equal(a.q_per_channel_scales(), b.q_per_channel_scales())
        assert torch.equal(a.q_per_channel_zero_points(), b.q_per_channel_zero_points())
        assert a.q_per_channel_axis() == b.q_per_channel_axis()


def assert_same_state_dict(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Same keys in the same order, equal values (tensors bit-exact, tuples element-wise)."""
    assert list(a) == list(b)
    for key, value in a.items():
        _assert_same_value(value, b[key], key)


def _assert_same_value(x: Any, y: Any, key: str) -> None:
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor), key
        assert_same_qtensor(x, y)
    elif isinstance(x, (tuple, list)):
        assert len(x) == len(y), key
        for xi, yi in zip(x, y):
            _assert_same_value(xi, yi, key)
    else:
        assert x == y, key


def save_load(obj: Any, *, weights_only: bool) -> Any:
    """``torch.save`` then ``torch.load`` through memory."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=weights_only)


def small_quantized_model() -> torch.nn.Module:
    """Quantize -> conv -> batch norm -> hardswish -> conv -> dequantize, random weights."""
    model = torch.nn.Sequential(
        fnnq.Quantize(0.05, 128, torch.quint8),
        fnnq.Conv2d(3, 4, 3, padding=1),
        fnnq.BatchNorm2d(4),
        fnnq.Hardswish(0.05, 100),
        fnnq.Conv2d(4, 4, 1),
        fnnq.DeQuantize(),
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, fnnq.Conv2d):
                w = torch.quantize_per_tensor(torch.randn_like(m.weight().dequantize()), 0.02, 0,
                                              torch.qint8)
                m.set_weight_bias(w, torch.randn(4))
    return model
