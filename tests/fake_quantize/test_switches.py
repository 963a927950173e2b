"""The model.apply(...) switches on a model mixing fake-quantizers with ordinary modules,
side by side with upstream's switches on an identical upstream model."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

from fxquant import fake_quantize as fq
from fxquant.fake_quantize import LearnableFakeQuantize
from fxquant.observers.minmax import MovingAverageMinMaxObserver

SWITCHES = ["enable_observer", "disable_observer", "enable_fake_quant", "disable_fake_quant"]


def _model(lib) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        lib.default_fake_quant(),
        nn.Linear(8, 6),
        nn.ReLU(),
        lib.default_fused_act_fake_quant(),
        nn.Linear(6, 4),
        lib.default_fixed_qparams_range_neg1to1_fake_quant(),
    )


def _switch_state(model: nn.Module) -> list[tuple[int, int]]:
    return [
        (int(m.fake_quant_enabled[0]), int(m.observer_enabled[0]))
        for m in model.modules()
        if hasattr(m, "fake_quant_enabled")
    ]


def _assert_same_outputs(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    assert torch.equal(ours(x), theirs(x))
    for a, b in zip(ours.modules(), theirs.modules()):
        if hasattr(b, "scale"):
            assert torch.equal(a.scale, b.scale)


@pytest.mark.parametrize("switch", SWITCHES)
def test_switch_sets_every_fake_quantizer_like_upstream(switch):
    ours, theirs = _model(fq), _model(tq)
    ours.apply(fq.disable_observer).apply(fq.disable_fake_quant)
    theirs.apply(tq.disable_observer).apply(tq.disable_fake_quant)
    ours.apply(getattr(fq, switch))
    theirs.apply(getattr(tq, switch))
    assert _switch_state(ours) == _switch_state(theirs)
    assert len(_switch_state(ours)) == 3


def test_switches_leave_other_modules_alone():
    model = _model(fq)
    linear_state = {k: v.clone() for k, v in model[1].state_dict().items()}
    for name in SWITCHES:
        model.apply(getattr(fq, name))
    assert model[1].state_dict().keys() == linear_state.keys()
    assert all(torch.equal(model[1].state_dict()[k], v) for k, v in linear_state.items())


def test_qat_schedule_matches_upstream():
    ours, theirs = _model(fq), _model(tq)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(5, 8, generator=gen) * (i + 1) for i in range(6)]
    for x in batches[:2]:  # observe + fake-quantize
        _assert_same_outputs(ours, theirs, x)
    ours.apply(fq.disable_observer)
    theirs.apply(tq.disable_observer)
    frozen = ours[0].scale.clone()
    for x in batches[2:4]:  # frozen parameters
        _assert_same_outputs(ours, theirs, x)
    assert torch.equal(ours[0].scale, frozen)
    ours.apply(fq.disable_fake_quant)
    theirs.apply(tq.disable_fake_quant)
    float_model = nn.Sequential(ours[1], ours[2], ours[4])
    for x in batches[4:]:  # pure float
        _assert_same_outputs(ours, theirs, x)
        assert torch.equal(ours(x), float_model(x))


def test_learnable_observer_switch_drives_static_estimation():
    m = LearnableFakeQuantize(MovingAverageMinMaxObserver, dtype=torch.quint8)
    nn.Sequential(m).apply(fq.disable_observer)
    assert m.static_enabled.tolist() == [0]
    nn.Sequential(m).apply(fq.enable_observer)
    assert m.static_enabled.tolist() == [1]
    nn.Sequential(m).apply(fq.disable_fake_quant)
    x = torch.randn(4)
    assert torch.equal(m(x), x)
