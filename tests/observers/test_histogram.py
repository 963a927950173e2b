"""HistogramObserver against upstream torch.ao.quantization.HistogramObserver (the oracle).

Interface, buffers, state dicts and degenerate inputs must match upstream exactly. The range
search is different by design (faster, and it minimises the real error), so its results are
compared by the quantization error they give: the L2 norm between a tensor and its
fake-quantized copy must be no worse than with upstream's qparams.

Tolerance for those comparisons, ``L2_SLACK``: near its minimum the error as a function of the
scale is flat and wiggles as single values cross rounding boundaries (on EfficientNet-Lite0's
``_blocks.15._bn2``, scales 0.2% apart give squared errors 0.3% apart, in no monotone order).
A histogram knows values only to within a bin, so choices inside that wiggle are ties; a 0.25%
slack on the L2 norm (0.5% on its square) allows for it. Aggregates over all layers are
checked without slack.
"""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
import torch.ao.quantization as tq
from hypothesis import given, settings
from hypothesis import strategies as st

from fxquant.observers.base import NonFiniteInputError, QuantizationWarning
from fxquant.observers.histogram import HistogramObserver

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:torch.ao.*")

L2_SLACK = 1.0025

AFFINE: dict = {}
SYMMETRIC = {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric}
SCHEMES = [pytest.param(AFFINE, id="affine-quint8"), pytest.param(SYMMETRIC, id="symmetric-qint8")]

CONFIGS = [
    pytest.param({}, id="default"),
    pytest.param(SYMMETRIC, id="symmetric-qint8"),
    pytest.param(
        {"dtype": torch.quint8, "qscheme": torch.per_tensor_symmetric}, id="symmetric-quint8"
    ),
    pytest.param({"quant_min": 0, "quant_max": 127}, id="default-histogram-observer-range"),
    pytest.param({"dtype": torch.qint8, "reduce_range": True}, id="qint8-reduce-range"),
    pytest.param({"quant_min": 0, "quant_max": 15}, id="4-bit-range"),
    pytest.param(
        {"bins": 256, "dtype": torch.qint8, "quant_min": -127, "quant_max": 127}, id="256-bins"
    ),
]


def _upstream(**kwargs) -> tq.HistogramObserver:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tq.HistogramObserver(**kwargs)


def _ours(**kwargs) -> HistogramObserver:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="reduce_range is deprecated")
        return HistogramObserver(**kwargs)


def _calibrate(observer, batches):
    for batch in batches:
        observer(batch)
    return observer


def l2_error(x: torch.Tensor, observer) -> float:
    """L2 norm between ``x`` and ``x`` fake-quantized with the observer's qparams."""
    scale, zero_point = observer.calculate_qparams()
    xq = torch.fake_quantize_per_tensor_affine(
        x, float(scale), int(zero_point), observer.quant_min, observer.quant_max
    )
    return float((x - xq).norm())


def _errors(batches, scheme) -> tuple[float, float]:
    """(ours, upstream) L2 error over all of ``batches`` after calibrating on them."""
    ours = _calibrate(_ours(**scheme), batches)
    upstream = _calibrate(_upstream(**scheme), batches)
    x = torch.cat([b.flatten() for b in batches])
    return l2_error(x, ours), l2_error(x, upstream)


# ---------------------------------------------------------------------------------------------
# synthetic distributions


def _synthetic(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    if name == "gaussian":
        return torch.randn(shape, generator=g) * 2 + 0.3
    if name == "laplace-outliers":
        magnitude = torch.empty(shape).exponential_(generator=g)
        x = magnitude * torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
        flat = x.view(-1)
        flat[torch.randint(0, flat.numel(), (max(flat.numel() // 50_000, 2),), generator=g)] *= 10
        return x
    if name == "relu":
        return torch.randn(shape, generator=g).relu()
    if name == "relu6":
        return (torch.randn(shape, generator=g) * 3).clamp(0, 6)
    if name == "uniform":
        return torch.rand(shape, generator=g) * 4 - 1
    raise ValueError(name)


DISTRIBUTIONS = ["gaussian", "laplace-outliers", "relu", "relu6", "uniform"]
# 4 batches each; 8 x 64 x 8 x 8 = 32768 elements are histogrammed exactly, 16 x 64 x 16 x 16
# = 262144 through the sampled path
SIZES = [
    pytest.param((8, 64, 8, 8), id="exact-path"),
    pytest.param((16, 64, 16, 16), id="sampled-path"),
]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_l2_error_no_worse_than_upstream_on_synthetic_data(name, shape, scheme):
    g = torch.Generator().manual_seed(7)
    batches = [_synthetic(name, shape, g) for _ in range(4)]
    ours, upstream = _errors(batches, scheme)
    assert ours <= upstream * L2_SLACK, f"{name}: ours {ours:.5g} vs upstream {upstream:.5g}"


def test_saturated_values_are_not_clipped_by_the_symmetric_scheme():
    # ReLU6 output: many values exactly 6. Upstream's range puts the top grid point at
    # 127 / 127.5 * 6, clipping all of them by half a step; ours keeps them within a tenth.
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 32, 16, 16, generator=g) * 3).clamp(0, 6)

    def six_loss(observer) -> float:
        scale, zero_point = observer.calculate_qparams()
        six = torch.fake_quantize_per_tensor_affine(
            torch.tensor([6.0]), float(scale), int(zero_point), -128, 127
        )
        return (6.0 - float(six)) / float(scale)

    ours = _calibrate(_ours(**SYMMETRIC), [x])
    upstream = _calibrate(_upstream(**SYMMETRIC), [x])
    assert six_loss(ours) < 0.1
    assert six_loss(upstream) > 0.4
    assert l2_error(x, ours) < 0.95 * l2_error(x, upstream)


def test_growing_range_over_batches_matches_one_big_batch():
    # every batch widens the range, so the histogram is re-binned each time
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(8, 64, 8, 8, generator=g) * scale for scale in (0.5, 1.0, 2.0, 4.0)]
    batches += [torch.randn(16, 64, 16, 16, generator=g) * 6.0]  # sampled path, widest
    x = torch.cat([b.flatten() for b in batches])
    incremental = l2_error(x, _calibrate(_ours(), batches))
    at_once = l2_error(x, _calibrate(_ours(), [x]))
    assert incremental == pytest.approx(at_once, rel=0.02)
    assert incremental <= l2_error(x, _calibrate(_upstream(), batches)) * L2_SLACK


# ---------------------------------------------------------------------------------------------
# real activations: EfficientNet-Lite0 on real photos

LAYERS = {
    "input": None,
    "stem relu6": "_stem_relu",
    "expand bn (pre-activation)": "_blocks.1._bn0",
    "depthwise relu6": "_blocks.1._relu1",
    "project bn (signed)": "_blocks.2._bn2",
    "block 9 depthwise bn": "_blocks.9._bn1",
    "head bn (pre-activation)": "_bn1",
}


@pytest.fixture(scope="module")
def activations() -> dict[str, list[torch.Tensor]]:
    """Feature maps of 4 photos, in 2 batches of 2, captured with forward hooks."""
    zoo = pytest.importorskip("fxquant.zoo")
    model = zoo.efficientnet_lite0()
    photos = zoo.imagenet_photos(4, split="calibration")
    modules = dict(model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in LAYERS}
    hooks = [
        modules[path].register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out.detach().clone())
        )
        for name, path in LAYERS.items()
        if path is not None
    ]
    with torch.no_grad():
        for batch in photos.split(2):
            captured["input"].append(batch.clone())
            model(batch)
    for hook in hooks:
        hook.remove()
    return captured


@pytest.mark.parametrize(
    "scheme",
    [*SCHEMES, pytest.param({"quant_min": 0, "quant_max": 127}, id="affine-7-bit-x86-default")],
)
def test_l2_error_no_worse_than_upstream_on_efficientnet_activations(activations, scheme):
    total_ours = total_upstream = 0.0
    for name, batches in activations.items():
        ours, upstream = _errors(batches, scheme)
        assert ours <= upstream * L2_SLACK, f"{name}: ours {ours:.5g} vs upstream {upstream:.5g}"
        total_ours += ours**2
        total_upstream += upstream**2
    assert total_ours <= total_upstream


def test_relu6_activations_are_calibrated_to_the_saturation(activations):
    # post-ReLU6 maps: min 0 and many values at exactly 6
    batches = activations["stem relu6"]
    assert float(min(b.min() for b in batches)) == 0.0
    observer = _calibrate(_ours(), batches)
    scale, zero_point = observer.calculate_qparams()
    assert int(zero_point) == 0
    assert float(scale) * 255 == pytest.approx(6.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# interface, buffers and state


def test_constructor_signature_matches_upstream():
    ours = inspect.signature(HistogramObserver.__init__).parameters
    upstream = inspect.signature(tq.HistogramObserver.__init__).parameters
    assert list(ours) == list(upstream)
    for name, parameter in upstream.items():
        assert ours[name].default == parameter.default, name
        assert ours[name].kind == parameter.kind, name


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_constructor_attributes_and_buffers_match_upstream(kwargs):
    ours, upstream = _ours(**kwargs), _upstream(**kwargs)
    for attr in (
        "bins",
        "dtype",
        "qscheme",
        "reduce_range",
        "quant_min",
        "quant_max",
        "is_dynamic",
    ):
        assert getattr(ours, attr) == getattr(upstream, attr), attr
    ours_state, upstream_state = ours.state_dict(), upstream.state_dict()
    assert list(ours_state) == list(upstream_state)
    for key, value in upstream_state.items():
        assert torch.equal(ours_state[key], value), key
    assert ours_state._metadata[""] == upstream_state._metadata[""]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        pytest.param({"qscheme": torch.per_channel_affine}, NotImplementedError, id="per-channel"),
        pytest.param({"is_dynamic": True}, NotImplementedError, id="dynamic"),
        pytest.param({"dtype": torch.float8_e4m3fn}, NotImplementedError, id="float8"),
        pytest.param({"bins": 0}, ValueError, id="no-bins"),
    ],
)
def test_rejects_unsupported_configurations(kwargs, error):
    with pytest.raises(error):
        HistogramObserver(**kwargs)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_small_tensors_are_histogrammed_exactly_like_upstream(kwargs):
    g = torch.Generator().manual_seed(5)
    first = torch.randn(4, 16, 8, 8, generator=g) * 3
    second = first[:2] * 0.5  # inside the first range: histograms add up
    ours = _calibrate(_ours(**kwargs), [first, second])
    upstream = _calibrate(_upstream(**kwargs), [first, second])
    for name in ("histogram", "min_val", "max_val"):
        assert torch.equal(getattr(ours, name), getattr(upstream, name)), name


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_qparams_are_valid(kwargs):
    g = torch.Generator().manual_seed(11)
    observer = _calibrate(_ours(**kwargs), [torch.randn(4, 64, 32, 32, generator=g) + 1])
    scale, zero_point = observer.calculate_qparams()
    assert scale.shape == zero_point.shape == (1,)
    assert math.isfinite(float(scale)) and float(scale) > 0
    assert observer.quant_min <= int(zero_point) <= observer.quant_max


@pytest.mark.parametrize("scheme", SCHEMES)
def test_state_dict_round_trip_with_upstream(scheme):
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(4, 16, 8, 8, generator=g) * s for s in (1.0, 3.0)]
    x = torch.cat([b.flatten() for b in batches])
    ours = _calibrate(_ours(**scheme), batches)
    upstream = _calibrate(_upstream(**scheme), batches)

    # ours -> upstream: upstream resumes from our statistics
    loaded_upstream = _upstream(**scheme)
    loaded_upstream.load_state_dict(ours.state_dict())
    for name in ("histogram", "min_val", "max_val", "eps"):
        assert torch.equal(getattr(loaded_upstream, name), getattr(ours, name)), name
    scale, _ = loaded_upstream.calculate_qparams()
    assert math.isfinite(float(scale))

    # upstream -> ours: same buffers, and our search on upstream's histogram
    loaded_ours = _ours(**scheme)
    loaded_ours.load_state_dict(upstream.state_dict())
    for name in ("histogram", "min_val", "max_val", "eps"):
        assert torch.equal(getattr(loaded_ours, name), getattr(upstream, name)), name
    assert l2_error(x, loaded_ours) <= l2_error(x, upstream) * L2_SLACK


def test_unobserved_state_dict_round_trip():
    fresh = _ours()
    fresh.load_state_dict(_upstream().state_dict())
    assert float(fresh.min_val) == math.inf and float(fresh.max_val) == -math.inf
    upstream = _upstream()
    upstream.load_state_dict(_ours().state_dict())
    assert float(upstream.min_val) == math.inf


def test_loading_a_version_2_checkpoint_with_empty_min_max():
    state = _ours().state_dict()
    state["min_val"], state["max_val"] = torch.tensor([]), torch.tensor([])
    state._metadata = {"": {"version": 2}}
    observer = _ours()
    observer.load_state_dict(state)
    assert float(observer.min_val) == math.inf and float(observer.max_val) == -math.inf


def test_with_args_builds_independent_observers():
    factory = HistogramObserver.with_args(
        bins=256, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric
    )
    first, second = factory(), factory()
    assert first is not second and first.histogram is not second.histogram
    assert (first.bins, first.dtype, first.qscheme) == (
        256,
        torch.qint8,
        torch.per_tensor_symmetric,
    )
    first(torch.randn(100))
    assert float(second.histogram.sum()) == 0.0


def test_forward_returns_its_input():
    x = torch.randn(3, 5)
    assert _ours()(x) is x
    big = torch.randn(300_000)
    assert _ours()(big) is big


def test_reset_min_max_vals_forgets_everything():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(1000, generator=g) * 5, torch.randn(1000, generator=g)
    observer = _calibrate(_ours(), [x])
    observer.reset_min_max_vals()
    assert float(observer.min_val) == math.inf and float(observer.histogram.sum()) == 0.0
    observer(y)
    fresh = _calibrate(_ours(), [y])
    assert torch.equal(observer.histogram, fresh.histogram)
    assert observer.calculate_qparams() == fresh.calculate_qparams()


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((2, 16, 8, 8), id="exact-path"),
        pytest.param((4, 64, 32, 32), id="sampled-path"),
    ],
)
def test_channels_last_batches_give_the_same_statistics(shape):
    # read in memory order (no copy); the histogram does not depend on the order
    x = torch.randn(shape, generator=torch.Generator().manual_seed(12)) * 2
    observer = _calibrate(_ours(), [x.to(memory_format=torch.channels_last)])
    assert float(observer.min_val) == float(x.min()) and float(observer.max_val) == float(x.max())
    assert float(observer.histogram.sum()) == pytest.approx(x.numel(), rel=1e-6)
    if x.numel() <= 2**16:
        assert torch.equal(observer.histogram, _calibrate(_upstream(), [x]).histogram)


def test_extra_repr_shows_the_range():
    observer = _calibrate(_ours(), [torch.tensor([-1.0, 2.0])])
    assert "min_val=-1.0" in repr(observer) and "max_val=2.0" in repr(observer)


# ---------------------------------------------------------------------------------------------
# the histogram of large tensors (sampled path)


# Layouts of the sampled path: whole spans of 128 x 256 elements; whole spans spaced 294
# apart (1 x 96 x 56 x 56); and a size with no whole spans' grouping (leftover groups).
LAYOUTS = [
    pytest.param((16, 64, 32, 32), id="whole-spans"),
    pytest.param((1, 96, 56, 56), id="other-spacing"),
    pytest.param((3, 7, 101, 103), id="leftover-groups"),
]


@pytest.mark.parametrize("shape", LAYOUTS)
@pytest.mark.parametrize("name", ["gaussian", "laplace-outliers", "relu"])
def test_sampled_histogram_matches_the_exact_one(name, shape):
    g = torch.Generator().manual_seed(9)
    x = _synthetic(name, shape, g)
    observer = _calibrate(_ours(), [x])
    exact = torch.histc(x, observer.bins, min=float(x.min()), max=float(x.max()))
    assert float(observer.min_val) == float(x.min()) and float(observer.max_val) == float(x.max())
    assert float(observer.histogram.sum()) == pytest.approx(x.numel(), rel=1e-6)
    # the CDFs agree (Kolmogorov-Smirnov distance; ~0.01 is typical for the ~17k values sampled)
    ks = (observer.histogram.double().cumsum(0) - exact.double().cumsum(0)).abs().max() / x.numel()
    assert ks < 0.015
    # ... and the extreme values are counted exactly: above the 20th largest value's bin
    for tail in (x.flatten().topk(20).values[-1], -(-x.flatten()).topk(20).values[-1]):
        edge = int(
            (float(tail) - float(x.min())) / (float(x.max()) - float(x.min())) * observer.bins
        )
        edge = min(edge, observer.bins - 1)
        side = slice(edge + 1, None) if tail > 0 else slice(None, max(edge - 1, 0))
        assert float(observer.histogram[side].sum()) == pytest.approx(
            float(exact[side].sum()), abs=1.0
        )


@pytest.mark.parametrize("shape", LAYOUTS)
def test_group_extremes_cover_every_element_once(shape):
    # distinct values 0 .. n-1 in random order: each group's maximum and minimum are distinct
    # elements, and over all groups the counts add up only if the groups partition the tensor
    from fxquant.observers.histogram import _group_count, _sampling, _summary

    n = math.prod(shape)
    x = torch.randperm(n, generator=torch.Generator().manual_seed(0)).float()
    sampling = _sampling(n, 2048, x.device)
    summary = _summary(x, sampling)
    groups = _group_count(n)
    maxima, minima = summary[sampling.n_sample :].split(groups)
    assert summary.numel() == sampling.n_sample + 2 * groups
    assert float(maxima.max()) == n - 1 and float(minima.min()) == 0
    # a group's maximum is at least its size - 1 above its minimum, and sizes add up to n
    assert torch.all(maxima >= minima)
    sizes = torch.full((groups,), 128)
    if n % 128:
        assert torch.equal(maxima[-(n % 128) :], minima[-(n % 128) :])  # single elements
        sizes[-(n % 128) :] = 1
    assert int(sizes.sum()) == n
    assert torch.all(maxima - minima >= sizes - 1)


@settings(max_examples=25, deadline=None)
@given(
    mean=st.floats(-10, 10),
    std=st.floats(1e-3, 100),
    outlier=st.floats(-1e4, 1e4),
    numel=st.sampled_from([1, 7, 5000, 70_000, 200_000]),
    scheme=st.sampled_from([AFFINE, SYMMETRIC, {"quant_min": 0, "quant_max": 127}]),
)
def test_histogram_keeps_every_value_and_qparams_stay_valid(mean, std, outlier, numel, scheme):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(numel, generator=g) * std + mean
    x[0] = outlier
    batches = [x, x[: max(numel // 3, 1)] * 2]
    observer = _calibrate(_ours(**scheme), batches)
    everything = torch.cat(batches)
    assert float(observer.histogram.sum()) == pytest.approx(everything.numel(), rel=1e-4)
    assert float(observer.min_val) == float(everything.min())
    assert float(observer.max_val) == float(everything.max())
    scale, zero_point = observer.calculate_qparams()
    assert math.isfinite(float(scale)) and float(scale) > 0
    assert observer.quant_min <= int(zero_point) <= observer.quant_max


def test_grid_finer_than_the_bins_16_bit():
    # 65536 levels over 2048 bins: the search cannot place values on the grid but still
    # weighs clipping against rounding
    g = torch.Generator().manual_seed(6)
    x = torch.randn(100_000, generator=g)
    config = {"dtype": torch.qint32, "quant_min": -32768, "quant_max": 32767}
    observer = _calibrate(_ours(**config), [x])
    scale, zero_point = observer.calculate_qparams()
    full_range = (float(x.max()) - float(x.min())) / 65535
    assert 0 < float(scale) <= full_range * 1.001
    assert -32768 <= int(zero_point) <= 32767
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minmax = _calibrate(tq.MinMaxObserver(**config), [x])
    assert l2_error(x, observer) <= l2_error(x, minmax) * L2_SLACK


# ---------------------------------------------------------------------------------------------
# bad and degenerate input


@pytest.mark.parametrize(
    "numel", [pytest.param(100, id="small"), pytest.param(100_000, id="large")]
)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_batch_raises_and_keeps_the_state(bad, numel):
    observer = _calibrate(_ours(), [torch.randn(50)])
    before = {k: v.clone() for k, v in observer.state_dict().items()}
    x = torch.randn(numel)
    x[numel // 2] = bad
    with pytest.raises(NonFiniteInputError):
        observer(x)
    for key, value in observer.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_empty_batch_is_skipped_with_a_warning():
    observer = _calibrate(_ours(), [torch.randn(50)])
    before = observer.histogram.clone()
    with pytest.warns(QuantizationWarning, match="empty"):
        observer(torch.empty(0, 3))
    assert torch.equal(observer.histogram, before)


def test_qparams_before_any_data_warn_and_default():
    with pytest.warns(QuantizationWarning, match="before the observer saw any data"):
        scale, zero_point = _ours().calculate_qparams()
    assert float(scale) == 1.0 and int(zero_point) == 0


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
@pytest.mark.parametrize(
    "numel", [pytest.param(100, id="small"), pytest.param(100_000, id="large")]
)
def test_constant_tensor_gives_upstreams_valid_qparams(value, numel, scheme):
    x = torch.full((numel,), value)
    ours = _calibrate(_ours(**scheme), [x])
    upstream = _calibrate(_upstream(**scheme), [x])
    assert torch.equal(ours.histogram, upstream.histogram)
    scale, zero_point = ours.calculate_qparams()
    assert math.isfinite(float(scale)) and float(scale) > 0
    up_scale, up_zero_point = upstream.calculate_qparams()
    assert torch.equal(scale, up_scale) and torch.equal(zero_point, up_zero_point)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_zeros_in_the_lowest_bin_of_a_signed_range(scheme):
    # mostly exact zeros (ReLU) plus one tiny negative value: 0 sits in the first bin, which
    # is both the zeros' bin and the bottom end of the range
    g = torch.Generator().manual_seed(8)
    x = torch.randn(8, 64, 8, 8, generator=g).relu()
    x[0, 0, 0, 0] = -1e-5
    ours = _calibrate(_ours(**scheme), [x])
    scale, _ = ours.calculate_qparams()
    assert math.isfinite(float(scale)) and float(scale) > 0
    assert l2_error(x, ours) <= l2_error(x, _calibrate(_upstream(**scheme), [x])) * L2_SLACK


def test_constant_batches_then_a_wider_one():
    # the first range is a single point; widening must keep its mass
    observer = _calibrate(
        _ours(), [torch.full((10,), 2.0), torch.full((10,), 5.0), torch.randn(30)]
    )
    assert float(observer.histogram.sum()) == pytest.approx(50.0)
    scale, _ = observer.calculate_qparams()
    assert math.isfinite(float(scale)) and float(scale) > 0
