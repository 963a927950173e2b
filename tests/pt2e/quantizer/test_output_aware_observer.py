"""PerChannelOutputMSEObserver: min/max without statistics, lower output error with them,
exact input moments, and linking through the x86 quantizer's prepare callback."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxquant.observers import PerChannelMinMaxObserver
from fxquant.pt2e.quantize_pt2e import prepare_pt2e
from fxquant.pt2e.quantizer.output_aware_observer import (
    LayerGeometry,
    LayerInputMoments,
    PerChannelOutputMSEObserver,
    _hessian_factor,
    _output_error,
    link_output_aware_weight_observers,
)
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

KW = {"dtype": torch.int8, "qscheme": torch.per_channel_symmetric, "quant_min": -128, "quant_max": 127, "eps": 2**-12}


def _smooth_images(n: int, channels: int = 3, size: int = 16) -> torch.Tensor:
    """Inputs whose neighbouring pixels are strongly correlated, like photos."""
    return F.avg_pool2d(torch.randn(n, channels, size + 4, size + 4), 5, stride=1)


def _conv_geometry(conv: nn.Conv2d, shape: tuple[int, ...]) -> LayerGeometry:
    return LayerGeometry(
        input_shape=shape, groups=conv.groups, features=conv.weight[0].numel(),
        kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
    )


def _output_mse(conv: nn.Conv2d, x: torch.Tensor, observer: nn.Module) -> float:
    scale, zero_point = observer.calculate_qparams()
    w_q = torch.fake_quantize_per_channel_affine(conv.weight, scale, zero_point.int(), 0, -128, 127)
    return float((F.conv2d(x, w_q, None, conv.stride, conv.padding) - F.conv2d(x, conv.weight, None, conv.stride, conv.padding)).pow(2).mean())


def test_without_input_statistics_it_is_per_channel_min_max():
    w = torch.randn(8, 3, 3, 3)
    ours, upstream_like = PerChannelOutputMSEObserver(**KW), PerChannelMinMaxObserver(**KW)
    ours(w)
    upstream_like(w)
    for a, b in zip(ours.calculate_qparams(), upstream_like.calculate_qparams()):
        assert torch.equal(a, b)


@torch.no_grad()
def test_with_input_statistics_the_output_error_drops():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    conv.weight.mul_(torch.linspace(0.1, 10, 16).view(-1, 1, 1, 1))
    x = _smooth_images(8)
    minmax = PerChannelMinMaxObserver(**KW)
    minmax(conv.weight)
    observer = PerChannelOutputMSEObserver(**KW)
    observer(conv.weight)
    moments = LayerInputMoments(_conv_geometry(conv, tuple(x.shape[1:])))
    observer.link(moments)
    moments.record(x)
    ours_scale, _ = observer.calculate_qparams()
    minmax_scale, _ = minmax.calculate_qparams()
    assert torch.all(ours_scale <= minmax_scale)  # only ever clips
    assert _output_mse(conv, x, observer) < 0.9 * _output_mse(conv, x, minmax)


@pytest.mark.parametrize("groups", [1, 4], ids=["dense", "depthwise"])
def test_input_moments_are_the_patch_second_moments(groups):
    conv = nn.Conv2d(4, 8, 3, padding=1, stride=2, groups=groups)
    x = torch.randn(2, 4, 6, 6)
    moments = LayerInputMoments(_conv_geometry(conv, (4, 6, 6)))
    moments.record(x)
    cols = F.unfold(x, 3, padding=1, stride=2)  # (N, 4*9, L)
    k = 4 // groups * 9
    vectors = cols.reshape(2, groups, k, -1).permute(1, 0, 3, 2).reshape(groups, -1, k).double()
    torch.testing.assert_close(moments.hessian, vectors.transpose(1, 2) @ vectors, rtol=1e-5, atol=1e-5)
    assert int(moments.rows) == vectors.shape[1]
    moments.record(torch.randn(2, 4, 5, 5))  # another edge's tensor through a shared observer
    assert int(moments.rows) == vectors.shape[1]


def test_low_rank_factor_gives_the_same_errors_as_the_full_matrix():
    vectors = torch.randn(1, 6, 40, dtype=torch.float64)  # 6 vectors of 40 features: rank 6
    hessian = vectors.transpose(1, 2) @ vectors
    delta = torch.randn(5, 40)
    factor = _hessian_factor(hessian, rows=6)
    assert factor.shape == (1, 6, 40)
    torch.testing.assert_close(_output_error(delta, factor, 1), _output_error(delta, hessian.float(), 1), rtol=1e-4, atol=1e-4)


class Net(nn.Module):
    def __init__(self, tie: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)
        if tie:
            self.fc2.weight = self.fc1.weight

    def forward(self, x):
        y = F.relu(self.dw(F.relu(self.conv(x))))
        return self.fc2(F.relu(self.fc1(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))))


def _weight_observers(model: torch.fx.GraphModule) -> list[PerChannelOutputMSEObserver]:
    return [m for m in model.modules() if isinstance(m, PerChannelOutputMSEObserver)]


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # torch's, from deepcopy of pytrees
@torch.no_grad()
def test_prepare_links_every_layer_and_calibration_fills_the_moments():
    x = _smooth_images(4)
    prepared = prepare_pt2e(torch.export.export(Net().eval(), (x,)).module(),
                            X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()))
    observers = _weight_observers(prepared)
    assert len(observers) == 4 and all(o.input_moments is not None for o in observers)
    prepared(x)
    assert all(float(o.input_moments.rows) > 0 for o in observers)
    copied = copy.deepcopy(prepared)  # hooks of the copy feed the copy's moments
    before = [float(o.input_moments.rows) for o in observers]
    copied(x)
    assert [float(o.input_moments.rows) for o in observers] == before
    assert all(float(o.input_moments.rows) == 2 * b for o, b in zip(_weight_observers(copied), before))


def test_a_weight_shared_by_two_layers_falls_back_to_min_max():
    x = _smooth_images(2)
    gm = torch.export.export(Net(tie=True).eval(), (x,)).module()
    prepared = prepare_pt2e(gm, X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()))
    prepared(x)
    tied = [o for o in _weight_observers(prepared) if o._shared_by_layers]
    assert len(tied) == 1
    reference = PerChannelMinMaxObserver(**KW)
    reference(tied[0]._weight)
    assert torch.equal(tied[0].calculate_qparams()[0], reference.calculate_qparams()[0])


def test_link_ignores_sites_that_are_not_weight_edges():
    assert link_output_aware_weight_observers({}) == 0
    assert link_output_aware_weight_observers({"not a site": PerChannelOutputMSEObserver(**KW)}) == 0
