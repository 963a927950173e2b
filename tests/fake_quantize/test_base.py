"""FakeQuantizeBase: abstract interface, the two uint8 switches, constructor factories."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq

from fxquant.fake_quantize import FakeQuantize, FakeQuantizeBase


class _Minimal(FakeQuantizeBase):
    def __init__(self, tag: str = "", size: int = 1) -> None:
        super().__init__()
        self.tag = tag
        self.size = size

    def forward(self, x):
        return x

    def calculate_qparams(self, **kwargs):
        return torch.tensor([1.0]), torch.tensor([0])


def test_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        FakeQuantizeBase()  # type: ignore[abstract]


def test_switch_buffers_match_upstream_layout():
    ours, theirs = _Minimal(), tq.FakeQuantize()
    for name in ("fake_quant_enabled", "observer_enabled"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.dtype == b.dtype == torch.uint8
        assert a.tolist() == b.tolist() == [1]
        assert name in dict(ours.named_buffers())


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda m: m.disable_fake_quant(), ([0], [1])),
        (lambda m: m.enable_fake_quant(False), ([0], [1])),
        (lambda m: m.disable_observer(), ([1], [0])),
        (lambda m: m.enable_observer(False), ([1], [0])),
        (lambda m: (m.disable_observer(), m.enable_observer()), ([1], [1])),
        (lambda m: (m.disable_fake_quant(), m.enable_fake_quant()), ([1], [1])),
    ],
    ids=["disable_fq", "enable_fq_false", "disable_obs", "enable_obs_false", "obs_off_on",
         "fq_off_on"],
)
def test_switch_methods(call, expected):
    m = _Minimal()
    call(m)
    assert (m.fake_quant_enabled.tolist(), m.observer_enabled.tolist()) == expected


def test_with_args_builds_fresh_modules_with_bound_kwargs():
    ctor = _Minimal.with_args(tag="a")
    first, second = ctor(), ctor(size=3)
    assert first is not second
    assert (first.tag, first.size, second.tag, second.size) == ("a", 1, "a", 3)


def test_with_args_chains():
    ctor = FakeQuantize.with_args(dtype=torch.qint8).with_args(quant_min=-8, quant_max=7)
    fq = ctor()
    assert (fq.dtype, fq.quant_min, fq.quant_max) == (torch.qint8, -8, 7)


def test_with_callable_args_is_evaluated_per_construction():
    counter = iter(range(100))
    ctor = _Minimal.with_callable_args(size=lambda: next(counter))
    assert [ctor().size for _ in range(3)] == [0, 1, 2]
