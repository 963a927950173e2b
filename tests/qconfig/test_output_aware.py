"""The opt-in output-aware FX mapping: upstream's default mapping with the output-aware weight
observer, linked to each layer's input observer after prepare_fx, used by convert_fx."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxquant.fx.state import FX_STATE_META_KEY
from fxquant.observers import (
    PerChannelMinMaxObserver,
    get_observer_state_dict,
    load_observer_state_dict,
)
from fxquant.pt2e.quantizer.output_aware_observer import PerChannelOutputMSEObserver
from fxquant.qconfig import (
    get_default_qconfig,
    get_default_qconfig_mapping,
    get_output_aware_qconfig,
    get_output_aware_qconfig_mapping,
    link_output_aware_weight_observers_fx,
    qconfig_equals,
)
from fxquant.quantize_fx import convert_fx, prepare_fx


def _smooth_images(n: int, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Inputs whose neighbouring pixels are strongly correlated, like photos."""
    gen = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.randn(n, channels, size + 4, size + 4, generator=gen), 5, stride=1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 10)
        with torch.no_grad():  # widely spread channel magnitudes, as after BN folding
            self.conv.weight.mul_(torch.linspace(0.2, 5, 16).view(-1, 1, 1, 1))

    def forward(self, x):
        y = F.relu(self.dw(F.relu(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class Twice(nn.Module):
    """One linear module called on two inputs: no single input distribution."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.fc(x))


def _weighted(prepared) -> dict:
    return prepared.meta[FX_STATE_META_KEY].weighted_qconfigs


def _prepare(model: nn.Module, mapping, x: torch.Tensor, *, link: bool):
    prepared = prepare_fx(model.eval(), mapping, (x,))
    if link:  # what prepare_fx runs once it calls the linker itself (a no-op then)
        link_output_aware_weight_observers_fx(prepared, _weighted(prepared))
    return prepared


@torch.no_grad()
def _quantize(model: nn.Module, mapping, calibration: torch.Tensor, *, link: bool):
    prepared = _prepare(model, mapping, calibration, link=link)
    prepared(calibration)
    return convert_fx(prepared)


@pytest.mark.parametrize("backend", ["x86", "fbgemm", "onednn"])
def test_mapping_is_the_default_with_output_aware_weights(backend):
    mapping, default = get_output_aware_qconfig_mapping(backend), get_default_qconfig_mapping(backend)
    qconfig = mapping.global_qconfig
    default_global = get_default_qconfig(backend)
    assert qconfig_equals(qconfig._replace(weight=default_global.weight), default_global)  # same activations
    weight = qconfig.weight()
    assert isinstance(weight, PerChannelOutputMSEObserver)
    assert (weight.dtype, weight.qscheme, weight.quant_min, weight.quant_max) == (
        torch.qint8, torch.per_channel_symmetric, -128, 127)
    assert qconfig_equals(get_output_aware_qconfig(backend), qconfig)
    assert mapping.object_type_qconfigs.keys() == default.object_type_qconfigs.keys()
    for object_type, entry in default.object_type_qconfigs.items():  # per-op entries: upstream's
        assert qconfig_equals(mapping.object_type_qconfigs[object_type], entry)


def test_per_tensor_backend_is_refused_with_a_remedy():
    with pytest.raises(ValueError, match="per tensor.*get_default_qconfig_mapping"):
        get_output_aware_qconfig_mapping("qnnpack")


def test_link_gives_every_conv_and_linear_its_input_statistics():
    x = _smooth_images(4)
    prepared = _prepare(Net(), get_output_aware_qconfig_mapping(), x, link=False)
    weighted = _weighted(prepared)
    assert link_output_aware_weight_observers_fx(prepared, weighted) == 0  # prepare_fx linked them already
    observers = {name: qconfig.weight() for name, qconfig in weighted.items()}
    assert sorted(observers) == ["conv", "dw", "fc"]
    assert all(isinstance(o, PerChannelOutputMSEObserver) and o.input_moments is not None for o in observers.values())
    assert link_output_aware_weight_observers_fx(prepared, weighted) == 0  # idempotent
    with torch.no_grad():
        prepared(x)
    rows = {name: int(o.input_moments.rows) for name, o in observers.items()}
    assert rows == {"conv": 4 * 16 * 16, "dw": 4 * 16 * 16, "fc": 4}
    assert observers["dw"].input_moments.hessian.shape == (16, 9, 9)


def test_a_deep_copy_feeds_its_own_statistics():
    x = _smooth_images(2)
    prepared = _prepare(Net(), get_output_aware_qconfig_mapping(), x, link=True)
    copied = copy.deepcopy(prepared)
    with torch.no_grad():
        copied(x)
    assert float(_weighted(prepared)["fc"].weight().input_moments.rows) == 0
    assert float(_weighted(copied)["fc"].weight().input_moments.rows) == 2


def test_without_the_search_it_converts_exactly_like_the_default_mapping():
    x = _smooth_images(8)
    prepared = prepare_fx(Net().eval(), get_output_aware_qconfig_mapping(), (x,))
    for qconfig in _weighted(prepared).values():
        qconfig.weight().search = False  # (a fresh, unlinked observer if prepare_fx linked none)
    with torch.no_grad():
        prepared(x)
        ours = convert_fx(prepared)(x)
        default = _quantize(Net(), get_default_qconfig_mapping(), x, link=False)(x)
    assert torch.equal(ours, default)


def test_a_module_called_twice_keeps_min_max_weights():
    x = torch.randn(4, 8)
    prepared = _prepare(Twice(), get_output_aware_qconfig_mapping(), x, link=True)
    observer = _weighted(prepared)["fc"].weight()
    assert observer.input_moments is None
    observer(prepared.fc.weight)
    reference = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    reference(prepared.fc.weight)
    assert torch.equal(observer.calculate_qparams()[0], reference.calculate_qparams()[0])


def test_convert_uses_the_linked_observer_and_the_layer_error_drops():
    calibration, holdout = _smooth_images(16, seed=1), _smooth_images(32, seed=2)
    model = Net().eval()
    with torch.no_grad():
        model.conv.weight[:, :, 1, 1] *= 6  # an outlier per channel: clipping it pays
    ours = _quantize(model, get_output_aware_qconfig_mapping(), calibration, link=True)
    default = _quantize(model, get_default_qconfig_mapping(), calibration, link=False)

    def conv_error(quantized) -> float:
        w_q = quantized.conv.weight().dequantize()
        with torch.no_grad():
            return float((F.conv2d(holdout, w_q, padding=1) - F.conv2d(holdout, model.conv.weight, padding=1)).pow(2).mean())

    assert bool((ours.conv.weight().q_per_channel_scales() < default.conv.weight().q_per_channel_scales()).any())
    assert conv_error(ours) < 0.9 * conv_error(default)  # measured: 0.81x


def _state_dict_round_trip(model: nn.Module) -> dict:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _clipping_net() -> Net:
    model = Net().eval()
    with torch.no_grad():
        model.conv.weight[:, :, 1, 1] *= 6  # an outlier per channel: the search clips it
    return model


@torch.no_grad()
def test_calibration_survives_the_state_dict_into_a_fresh_prepared_model():
    calibration, holdout = _smooth_images(8, seed=1), _smooth_images(4, seed=2)
    model = _clipping_net()
    calibrated = prepare_fx(copy.deepcopy(model), get_output_aware_qconfig_mapping(), (calibration,))
    calibrated(calibration)
    assert "LayerInputMoments(groups=1, features=27, rows=2048)" in str(calibrated)  # 8 images x 16 x 16
    state = _state_dict_round_trip(calibrated)
    assert sorted(k.split(".", 1)[1] for k in state if ".input_moments_" in k) == [
        f"input_moments_{name}.{buffer}" for name in ("conv", "dw", "fc") for buffer in ("hessian", "rows")
    ]
    fresh = prepare_fx(copy.deepcopy(model), get_output_aware_qconfig_mapping(), (calibration,))
    fresh.load_state_dict(state)
    expected, loaded = convert_fx(calibrated), convert_fx(fresh)
    assert torch.equal(loaded(holdout), expected(holdout))
    assert torch.equal(loaded.conv.weight().q_per_channel_scales(), expected.conv.weight().q_per_channel_scales())
    # not vacuous: min/max weights (what the fresh model gave before) differ
    default = _quantize(model, get_default_qconfig_mapping(), calibration, link=False)
    assert bool((loaded.conv.weight().q_per_channel_scales() < default.conv.weight().q_per_channel_scales()).any())


@torch.no_grad()
def test_calibration_survives_the_observer_state_dict():
    """``get_observer_state_dict``/``load_observer_state_dict`` carry the input statistics the
    output-aware observers keep inside the input observers (submodules of an observer)."""
    calibration, holdout = _smooth_images(8, seed=1), _smooth_images(4, seed=2)
    model = _clipping_net()
    calibrated = prepare_fx(copy.deepcopy(model), get_output_aware_qconfig_mapping(), (calibration,))
    calibrated(calibration)
    buffer = io.BytesIO()
    torch.save(get_observer_state_dict(calibrated), buffer)
    buffer.seek(0)
    fresh = prepare_fx(copy.deepcopy(model), get_output_aware_qconfig_mapping(), (calibration,))
    load_observer_state_dict(fresh, torch.load(buffer, weights_only=False))
    expected, loaded = convert_fx(calibrated), convert_fx(fresh)
    assert torch.equal(loaded.conv.weight().q_per_channel_scales(), expected.conv.weight().q_per_channel_scales())
    assert torch.equal(loaded(holdout), expected(holdout))
