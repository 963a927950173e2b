"""AffineQuantizedMovingAverageMinMaxObserver and AffineQuantizedPlaceholderObserver:
torchao's constructor signatures, the averaged range (against the block-wise numerics and
against upstream's moving-average observers), state handling, and convert() -- static and
dynamic."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization.observer as upstream
from torch import fx, nn

from fxquant.numerics.affine import dequantize_affine, quantize_affine
from fxquant.numerics.blockwise import (
    blockwise_minmax,
    choose_qparams_affine,
    choose_qparams_affine_with_min_max,
)
from fxquant.numerics.dtypes import QuantizationRangeError
from fxquant.numerics.ops import quantized_decomposed as qd
from fxquant.observers.affine import (
    AffineQuantizedMinMaxObserver,
    MappingType,
    TorchAODType,
    UncalibratedObserverError,
)
from fxquant.observers.affine_variants import (
    AffineQuantizedMovingAverageMinMaxObserver,
    AffineQuantizedPlaceholderObserver,
    StaticPlaceholderError,
)
from fxquant.observers.base import NonFiniteInputError, QuantizationWarning
from fxquant.observers.granularity import PerAxis, PerBlock, PerGroup, PerTensor, PerToken

MovingAverage = AffineQuantizedMovingAverageMinMaxObserver
Placeholder = AffineQuantizedPlaceholderObserver


def _batches(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (1.0 + 2 * i) + 0.1 * i for i in range(n)]


def _ema(batches: list[torch.Tensor], block_size: tuple[int, ...], c: float):
    """Reference: the first batch's per-block range, then min += c * (batch_min - min)."""
    min_val, max_val = blockwise_minmax(batches[0], block_size)
    for x in batches[1:]:
        bmin, bmax = blockwise_minmax(x, block_size)
        min_val = min_val + c * (bmin - min_val)
        max_val = max_val + c * (bmax - max_val)
    return min_val, max_val


# ---- construction ---------------------------------------------------------------------------


def test_moving_average_positional_order_is_torchaos():
    # (mapping_type, target_dtype, granularity, averaging_constant, quant_min, quant_max, eps,
    #  is_dynamic, scale_dtype, zero_point_dtype, preserve_zero, zero_point_domain)
    obs = MovingAverage(MappingType.ASYMMETRIC, torch.uint8, PerAxis(0), 0.5, 0, 127, 1e-4,
                        False, torch.float64, torch.int32)
    assert (obs.averaging_constant, obs.quant_min, obs.quant_max, obs.eps) == (0.5, 0, 127, 1e-4)
    assert (obs.is_dynamic, obs.scale_dtype, obs.zero_point_dtype) == (
        False, torch.float64, torch.int32)


def test_placeholder_positional_order_is_torchaos():
    # (mapping_type, target_dtype, granularity, quant_min, quant_max, eps, is_dynamic, ...)
    obs = Placeholder(MappingType.SYMMETRIC, torch.int8, PerToken(), -127, 127, 1e-5, True)
    assert (obs.quant_min, obs.quant_max, obs.eps, obs.is_dynamic) == (-127, 127, 1e-5, True)


@pytest.mark.parametrize("cls", [MovingAverage, Placeholder], ids=lambda c: c.__name__)
def test_accepts_what_a_quantization_spec_passes(cls):
    # the engine passes dtype/qscheme/ch_axis (ignored) and quant_min/quant_max/is_dynamic
    ctor = cls.with_args(mapping_type=MappingType.SYMMETRIC, target_dtype=torch.int8,
                         granularity=PerToken(), averaging_constant=1.0)
    obs = ctor(dtype=torch.int8, qscheme=torch.per_tensor_symmetric, ch_axis=0,
               quant_min=-127, quant_max=127, is_dynamic=True)
    assert (obs.target_dtype, obs.quant_min, obs.quant_max, obs.is_dynamic) == (
        torch.int8, -127, 127, True)
    assert ctor() is not ctor()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"averaging_constant": 0.0}, ValueError, r"averaging_constant must be in \(0, 1\]"),
        ({"averaging_constant": 1.5}, ValueError, r"averaging_constant must be in \(0, 1\]"),
        ({"is_dynamic": True}, NotImplementedError, "averaging_constant=1"),
        ({"quant_min": -200}, QuantizationRangeError, "exceeds"),
        ({"granularity": PerAxis}, TypeError, "Granularity instance"),
    ],
    ids=["c-zero", "c-above-one", "dynamic-with-average", "range", "granularity-class"],
)
def test_moving_average_constructor_errors(kwargs, error, match):
    args = {"mapping_type": MappingType.SYMMETRIC, "target_dtype": torch.int8,
            "granularity": PerTensor(), **kwargs}
    with pytest.raises(error, match=match):
        MovingAverage(**args)


def test_moving_average_dynamic_with_constant_one_is_allowed():
    obs = MovingAverage(MappingType.ASYMMETRIC, torch.int8, PerToken(), averaging_constant=1,
                        is_dynamic=True)
    assert obs.is_dynamic and "is_dynamic=True" in repr(obs)


# ---- moving-average statistics ------------------------------------------------------------


@pytest.mark.parametrize("c", [0.01, 0.5, 1.0], ids=["c0.01", "c0.5", "c1"])
@pytest.mark.parametrize(
    "mapping,dtype,granularity,shape",
    [
        (MappingType.ASYMMETRIC, torch.uint8, PerTensor(), (6, 8)),
        (MappingType.SYMMETRIC, torch.int8, PerAxis(0), (6, 8)),
        (MappingType.SYMMETRIC_NO_CLIPPING_ERR, torch.int4, PerGroup(4), (6, 8)),
        (MappingType.ASYMMETRIC, torch.int8, PerToken(), (2, 3, 8)),
        (MappingType.SYMMETRIC, TorchAODType.INT4, PerBlock((2, 4)), (6, 8)),
    ],
    ids=["tensor-uint8", "axis-int8", "group-int4-noclip", "token", "block-aod-int4"],
)
def test_qparams_equal_choose_qparams_on_averaged_range(c, mapping, dtype, granularity, shape):
    obs = MovingAverage(mapping, dtype, granularity, averaging_constant=c)
    batches = _batches(shape)
    for x in batches:
        assert obs(x) is x
    block = obs.block_size
    min_val, max_val = _ema(batches, block, c)
    assert torch.equal(obs.min_val, min_val) and torch.equal(obs.max_val, max_val)
    expected = choose_qparams_affine_with_min_max(min_val, max_val, mapping, block, dtype)
    scale, zp = obs.calculate_qparams()
    assert torch.equal(scale, expected[0]) and torch.equal(zp, expected[1])


def test_constant_one_keeps_only_the_last_batch():
    obs = MovingAverage(MappingType.ASYMMETRIC, torch.uint8, PerAxis(0), averaging_constant=1)
    batches = _batches((4, 8))
    for x in batches:
        obs(x)
    scale, zp = obs.calculate_qparams()
    ref = choose_qparams_affine(batches[-1], MappingType.ASYMMETRIC, (1, 8), torch.uint8)
    assert torch.equal(scale, ref[0]) and torch.equal(zp, ref[1])


@pytest.mark.parametrize(
    "ours,ref",
    [
        ((MappingType.ASYMMETRIC, torch.uint8, PerTensor()),
         lambda: upstream.MovingAverageMinMaxObserver(averaging_constant=0.25,
                                                      dtype=torch.quint8)),
        ((MappingType.SYMMETRIC, torch.int8, PerTensor()),
         lambda: upstream.MovingAverageMinMaxObserver(
             averaging_constant=0.25, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)),
        ((MappingType.SYMMETRIC, torch.int8, PerAxis(0)),
         lambda: upstream.MovingAveragePerChannelMinMaxObserver(
             averaging_constant=0.25, ch_axis=0, dtype=torch.qint8,
             qscheme=torch.per_channel_symmetric)),
    ],
    ids=["tensor-affine", "tensor-symmetric", "channel-symmetric"],
)
def test_matches_upstream_moving_average_observers(ours, ref):
    mapping, dtype, granularity = ours
    obs, ref_obs = MovingAverage(mapping, dtype, granularity, averaging_constant=0.25), ref()
    for x in _batches((5, 7), n=5, seed=3):
        obs(x)
        ref_obs(x)
    assert torch.equal(obs.min_val.reshape(-1), ref_obs.min_val.reshape(-1))
    assert torch.equal(obs.max_val.reshape(-1), ref_obs.max_val.reshape(-1))
    scale, zp = obs.calculate_qparams()
    ref_scale, ref_zp = ref_obs.calculate_qparams()
    assert torch.equal(scale.reshape(-1), ref_scale)
    assert torch.equal(zp.long().reshape(-1), ref_zp)


def test_is_not_a_running_minmax():
    # an outlier batch widens a min/max observer for good but fades from the average
    avg = MovingAverage(MappingType.SYMMETRIC, torch.int8, PerTensor(), averaging_constant=0.5)
    minmax = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerTensor())
    for x in [torch.tensor([1.0]), torch.tensor([9.0]), torch.tensor([1.0]), torch.tensor([1.0])]:
        avg(x)
        minmax(x)
    assert float(minmax.max_val) == 9.0
    assert float(avg.max_val) == 2.0  # 1 -> 5 -> 3 -> 2


def test_empty_batch_warns_and_keeps_state():
    obs = MovingAverage(MappingType.SYMMETRIC, torch.int8, PerAxis(0), averaging_constant=0.5)
    obs(torch.ones(2, 3))
    with pytest.warns(QuantizationWarning, match="empty tensor"):
        obs(torch.empty(0, 3))
    assert torch.equal(obs.max_val, torch.ones(2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_batch_raises_and_keeps_state(bad):
    obs = MovingAverage(MappingType.SYMMETRIC, torch.int8, PerTensor())
    obs(torch.ones(4))
    with pytest.raises(NonFiniteInputError):
        obs(torch.tensor([1.0, bad]))
    assert float(obs.max_val) == 1.0


def test_block_layout_change_is_an_error():
    obs = MovingAverage(MappingType.SYMMETRIC, torch.int8, PerAxis(0))
    obs(torch.randn(4, 8))
    with pytest.raises(ValueError, match="keep the blocked dims the same"):
        obs(torch.randn(5, 8))


def test_before_data_raises():
    with pytest.raises(UncalibratedObserverError, match="before the observer saw any data"):
        MovingAverage(MappingType.SYMMETRIC, torch.int8, PerTensor()).calculate_qparams()


def test_state_dict_round_trip_and_reset():
    obs = MovingAverage(MappingType.ASYMMETRIC, torch.uint8, PerGroup(4), averaging_constant=0.3)
    for x in _batches((3, 8)):
        obs(x)
    fresh = MovingAverage(MappingType.ASYMMETRIC, torch.uint8, PerGroup(4), averaging_constant=0.3)
    fresh.load_state_dict(obs.state_dict())
    assert torch.equal(fresh.calculate_qparams()[0], obs.calculate_qparams()[0])
    obs.reset_min_max_vals()
    assert obs.min_val.numel() == 0


# ---- placeholder ------------------------------------------------------------------------------


def test_placeholder_records_layout_only():
    obs = Placeholder(MappingType.ASYMMETRIC, torch.int8, PerToken(), is_dynamic=True)
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    assert obs(x) is x
    assert obs.block_size == (1, 1, 8) and obs.original_dtype == torch.bfloat16
    assert list(obs.buffers()) == []
    with pytest.raises(StaticPlaceholderError, match="is_dynamic=True"):
        obs.calculate_qparams()


# ---- convert ----------------------------------------------------------------------------------


def _observed_module(obs: nn.Module) -> tuple[fx.GraphModule, fx.Node]:
    root = nn.Module()
    root.obs = obs
    graph = fx.Graph()
    x = graph.placeholder("x")
    node = graph.call_module("obs", (x,))
    graph.output(graph.call_function(torch.neg, (node,)))
    return fx.GraphModule(root, graph), node


def _convert(obs: nn.Module, calibration: list[torch.Tensor]) -> fx.GraphModule:
    gm, node = _observed_module(obs)
    for x in calibration:
        gm(x)
    obs.convert(gm, node)
    gm.graph.lint()
    gm.recompile()
    return gm


def _targets(gm: fx.GraphModule) -> list[object]:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize(
    "granularity,q_op",
    [(PerTensor(), qd.quantize_per_tensor.default), (PerAxis(0), qd.quantize_per_channel.default),
     (PerGroup(4), qd.quantize_per_channel_group.default)],
    ids=["tensor", "axis0", "group"],
)
def test_static_moving_average_converts_with_frozen_averaged_qparams(granularity, q_op):
    obs = MovingAverage(MappingType.ASYMMETRIC, torch.int8, granularity, averaging_constant=0.5)
    gm = _convert(obs, _batches((6, 8)))
    assert _targets(gm)[0] is q_op
    scale, zp = obs.calculate_qparams()
    x = torch.randn(6, 8) * 4
    block = obs.block_size
    expected = dequantize_affine(quantize_affine(x, block, scale, zp, torch.int8), block, scale, zp)
    assert torch.equal(gm(x), -expected)


@pytest.mark.parametrize(
    "make",
    [lambda: Placeholder(MappingType.ASYMMETRIC, torch.int8, PerToken(), is_dynamic=True),
     lambda: MovingAverage(MappingType.ASYMMETRIC, torch.int8, PerToken(), averaging_constant=1,
                           is_dynamic=True)],
    ids=["placeholder", "moving-average-c1"],
)
def test_dynamic_converts_to_a_run_time_choice(make):
    obs = make()
    gm = _convert(obs, [torch.randn(4, 8)])
    assert _targets(gm)[0] is choose_qparams_affine
    assert not any(n.op == "get_attr" for n in gm.graph.nodes)  # nothing frozen
    for s in (0.1, 7.0):  # new data, new ranges: parameters follow the input
        x = torch.randn(4, 8) * s
        scale, zp = choose_qparams_affine(x, MappingType.ASYMMETRIC, (1, 8), torch.int8)
        expected = dequantize_affine(quantize_affine(x, (1, 8), scale, zp, torch.int8), (1, 8),
                                     scale, zp)
        assert torch.equal(gm(x), -expected)


def test_static_placeholder_convert_names_the_node():
    obs = Placeholder(MappingType.ASYMMETRIC, torch.int8, PerToken())
    gm, node = _observed_module(obs)
    gm(torch.randn(2, 8))
    with pytest.raises(StaticPlaceholderError, match=r"%obs.*is_dynamic=True"):
        obs.convert(gm, node)
