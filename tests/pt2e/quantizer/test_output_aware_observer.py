"""PerChannelOutputMSEObserver: min/max without statistics, lower output error with them,
exact input moments, the batched search choosing exactly what a plain sequential search
(written here) chooses, and linking through the x86 quantizer's prepare callback."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxquant.observers import PerChannelMinMaxObserver
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.output_aware_observer import (
    LayerGeometry,
    LayerInputMoments,
    PerChannelOutputMSEObserver,
    _fake_quantize_per_row,
    _output_error,
    _pivoted_cholesky,
    _quadratic_form,
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


def _psd(groups: int, rows: int, k: int, dead: int = 0, seed: int = 0) -> torch.Tensor:
    """Σ x xᵀ over ``rows`` correlated vectors (the first ``dead`` features always zero)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(groups, rows, k, generator=gen, dtype=torch.float64).cumsum(-1)  # correlated
    x[..., :dead] = 0
    return x.transpose(1, 2) @ x


@pytest.mark.parametrize(
    ("groups", "rows", "k", "dead", "kind"),
    [(1, 6, 40, 0, "low_rank"), (1, 300, 200, 0, "cholesky"), (1, 300, 200, 7, "cholesky"),
     (4, 50, 9, 2, "cholesky"), (1, 120, 200, 0, "dense")],
    ids=["low-rank", "full-rank", "dead-features", "depthwise-dead", "singular"],
)
def test_every_quadratic_form_gives_the_errors_of_h_itself(groups, rows, k, dead, kind):
    hessian = _psd(groups, rows, k, dead)
    form = _quadratic_form(hessian, rows)
    assert form.kind == kind
    delta = torch.randn(3, 2 * groups, k)
    per_group = delta.reshape(3, groups, 2, k).double()
    expected = torch.einsum("ngok,gkl,ngol->ngo", per_group, hessian, per_group).reshape(3, -1)
    torch.testing.assert_close(_output_error(delta, form).double(), expected, rtol=1e-4, atol=1e-6)


def test_pivoted_cholesky_reconstructs_a_low_rank_matrix():
    hessian = _psd(2, 5, 30)
    factor = _pivoted_cholesky(hessian, 5)
    torch.testing.assert_close(factor.transpose(1, 2) @ factor, hessian, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(6), ids=[f"seed{i}" for i in range(6)])
def test_fake_quantize_per_row_is_torchs_fake_quantize_bit_for_bit(seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(9, 31, generator=gen) * 10.0 ** (seed - 3)
    scale = w.abs().amax(1) / torch.tensor([[127.5], [60.0], [3.0]])  # exact halves, clipping
    zero_point = torch.zeros(3, 9, dtype=torch.int64) if seed % 2 else torch.randint(-4, 5, (3, 9), generator=gen)
    ours = _fake_quantize_per_row(w, scale, zero_point, -128, 127)
    for i in range(3):
        assert torch.equal(ours[i], torch.fake_quantize_per_channel_affine(w, scale[i], zero_point[i].int(), 0, -128, 127))


# --- the search against a plain sequential one ------------------------------------------

COARSE = [0.95 - 0.05 * i for i in range(10)]
FINE = [d / 100 for d in (-4, -3, -2, -1, 1, 2, 3, 4)]


def _reference_scale(observer: PerChannelOutputMSEObserver, hessian: torch.Tensor) -> torch.Tensor:
    """One ratio at a time, float64 errors on H itself, a strict ``<`` (the first best wins)."""
    w = observer.observed_weight.float().reshape(observer.observed_weight.shape[0], -1)
    amax = torch.maximum(-observer.min_val, observer.max_val)
    groups = hessian.shape[0]

    def error(ratio: torch.Tensor) -> torch.Tensor:
        scale, zero_point = observer._calculate_qparams(-amax * ratio, amax * ratio)
        w_q = torch.fake_quantize_per_channel_affine(w, scale, zero_point.int(), 0, -128, 127)
        delta = (w_q - w).double().reshape(groups, -1, w.shape[1])
        return ((delta @ hessian) * delta).sum(-1).reshape(-1)

    best_ratio = torch.ones_like(amax)
    best_error = error(best_ratio)
    for offsets in (COARSE, FINE):
        center = best_ratio.clone() if offsets is FINE else torch.zeros_like(amax)
        for offset in offsets:
            ratio = (center + offset).clamp(0.5, 1.0)
            err = error(ratio)
            better = err < best_error
            best_error, best_ratio = torch.where(better, err, best_error), torch.where(better, ratio, best_ratio)
    return observer._calculate_qparams(-amax * best_ratio, amax * best_ratio)[0]


def _linked_observer(weight: torch.Tensor, hessian: torch.Tensor, rows: int) -> PerChannelOutputMSEObserver:
    observer = PerChannelOutputMSEObserver(**KW)
    observer(weight)
    moments = LayerInputMoments(LayerGeometry(input_shape=(1,), groups=hessian.shape[0], features=hessian.shape[-1]))
    moments.hessian.copy_(hessian)
    moments.rows.fill_(rows)
    observer.link(moments)
    return observer


def _random_weight(out: int, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out, k, generator=gen) * torch.rand(out, 1, generator=gen) * 3
    w[0] = 0  # a dead channel: every ratio ties
    w[1] = torch.randint(-4, 5, (k,), generator=gen) * 0.25  # on the grid at r = 1: ties on zero error
    w[2, 0] = 40 * w[2].abs().max()  # one outlier: clipping pays
    return w


@pytest.mark.parametrize(
    ("groups", "out", "k", "rows", "dead"),
    [(1, 48, 64, 500, 0), (1, 40, 300, 400, 30), (1, 64, 256, 20, 0), (1, 32, 300, 200, 0), (16, 16, 9, 60, 0)],
    ids=["dense", "dead-inputs", "low-rank", "singular", "depthwise"],
)
@pytest.mark.parametrize("seed", [0, 1], ids=["seed0", "seed1"])
def test_search_chooses_the_scales_of_a_sequential_float64_search(groups, out, k, rows, dead, seed):
    hessian = _psd(groups, rows, k, dead, seed) / rows
    observer = _linked_observer(_random_weight(out, k, seed), hessian, rows)
    assert torch.equal(observer.calculate_qparams()[0], _reference_scale(observer, hessian))


@pytest.fixture(scope="module")
def lite0_layers():
    """Real layers: EfficientNet-Lite0's weights with the moments of real photos."""
    from fxquant.zoo import efficientnet_lite0, imagenet_photos

    model = efficientnet_lite0()
    chosen = {"depthwise": model._blocks[2]._depthwise_conv, "pointwise-1152": model._blocks[15]._project_conv,
              "classifier": model._fc}
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: inputs.setdefault(name, a[0]))
             for name, m in chosen.items()]
    with torch.no_grad():
        model(imagenet_photos(16, split="calibration"))
    for h in hooks:
        h.remove()
    return {name: (m, inputs[name]) for name, m in chosen.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["depthwise", "pointwise-1152", "classifier"])
@torch.no_grad()
def test_search_matches_the_sequential_search_on_real_layers(lite0_layers, name):
    layer, x = lite0_layers[name]
    if isinstance(layer, nn.Linear):
        geometry = LayerGeometry(input_shape=tuple(x.shape[1:]), groups=1, features=layer.in_features)
    else:
        geometry = _conv_geometry(layer, tuple(x.shape[1:]))
    moments = LayerInputMoments(geometry)
    moments.record(x)
    observer = PerChannelOutputMSEObserver(**KW)
    channels = 128 if geometry.groups == 1 else None  # keeps the float64 reference quick
    observer(layer.weight.detach()[:channels])
    observer.link(moments)
    scale = observer.calculate_qparams()[0]
    assert torch.equal(scale, _reference_scale(observer, moments.hessian / moments.rows))
    assert bool((scale < PerChannelMinMaxObserver.calculate_qparams(observer)[0]).any())  # it did clip


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
    reference(tied[0].observed_weight)
    assert torch.equal(tied[0].calculate_qparams()[0], reference.calculate_qparams()[0])


def test_link_ignores_sites_that_are_not_weight_edges():
    assert link_output_aware_weight_observers({}) == 0
    assert link_output_aware_weight_observers({"not a site": PerChannelOutputMSEObserver(**KW)}) == 0


def _state_dict_round_trip(model: nn.Module) -> dict:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_an_unused_observer_round_trips_its_empty_state():
    observer = PerChannelOutputMSEObserver(**KW)
    fresh = PerChannelOutputMSEObserver(**KW)
    fresh.load_state_dict(_state_dict_round_trip(observer))
    assert fresh.observed_weight.numel() == 0 and fresh.min_val.numel() == 0


def test_the_observed_weight_is_a_view_of_the_weight():
    weight = torch.randn(8, 3, 3, 3)
    observer = PerChannelOutputMSEObserver(**KW)
    observer(weight)
    assert observer.state_dict()["observed_weight"].untyped_storage().data_ptr() == weight.untyped_storage().data_ptr()


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # torch's, from deepcopy of pytrees
@torch.no_grad()
def test_calibration_survives_the_state_dict_into_a_fresh_prepared_model():
    calibration, holdout = _smooth_images(8), _smooth_images(8)  # export fixes the batch size

    def prepared_net():
        torch.manual_seed(0)
        model = Net().eval()
        model.conv.weight[:, :, 1, 1] *= 6  # an outlier per channel: the search clips it
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
        return prepare_pt2e(torch.export.export(model, (calibration,)).module(), quantizer)

    calibrated = prepared_net()
    calibrated(calibration)
    fresh, unloaded = prepared_net(), prepared_net()
    fresh.load_state_dict(_state_dict_round_trip(calibrated))
    assert all(o.observed_weight.numel() > 0 and float(o.input_moments.rows) > 0 for o in _weight_observers(fresh))
    scales = [o.calculate_qparams()[0] for o in _weight_observers(calibrated)]
    assert all(torch.equal(o.calculate_qparams()[0], s) for o, s in zip(_weight_observers(fresh), scales))
    # not vacuous: without the statistics the conv weight keeps its min/max range
    unloaded(calibration)
    baseline = PerChannelMinMaxObserver.calculate_qparams(_weight_observers(unloaded)[0])[0]
    assert bool((scales[0] < baseline).any())
    assert torch.equal(convert_pt2e(fresh)(holdout), convert_pt2e(calibrated)(holdout))
