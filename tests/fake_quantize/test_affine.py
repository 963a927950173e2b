"""AffineFakeQuantize: output equal to fake_quantize_affine with the observer's block-wise
parameters, a straight-through gradient masked to the unclamped elements, the QAT switches,
dynamic mode agreeing with the converted graph, and bit-exactness against upstream's
FakeQuantize where the granularity is one upstream has."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import fx, nn

from fxquant.fake_quantize import FakeQuantizeBase, disable_fake_quant, disable_observer
from fxquant.fake_quantize.affine import (
    AffineFakeQuantize,
    default_affine_fake_quant,
    default_affine_per_axis_fake_quant,
    default_groupwise_fake_quant,
)
from fxquant.numerics.affine import fake_quantize_affine, quantize_affine
from fxquant.numerics.blockwise import affine_qrange, choose_qparams_affine
from fxquant.observers import MinMaxObserver
from fxquant.observers.affine import (
    AffineQuantizedMinMaxObserver,
    MappingType,
    TorchAODType,
    ZeroPointDomain,
)
from fxquant.observers.affine_variants import (
    AffineQuantizedMovingAverageMinMaxObserver,
    AffineQuantizedPlaceholderObserver,
)
from fxquant.observers.granularity import (
    PerAxis,
    PerBlock,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    get_block_size,
)

Obs = AffineQuantizedMinMaxObserver

# (observer kwargs, input shape, dtype that fake_quantize_affine takes for the same grid)
CASES = [
    ({"mapping_type": MappingType.ASYMMETRIC, "target_dtype": torch.uint8,
      "granularity": PerTensor()}, (6, 8), torch.uint8),
    ({"mapping_type": MappingType.SYMMETRIC, "target_dtype": torch.int8,
      "granularity": PerAxis(0)}, (6, 8), torch.int8),
    ({"mapping_type": MappingType.SYMMETRIC, "target_dtype": torch.int8,
      "granularity": PerGroup(4)}, (6, 8), torch.int8),
    ({"mapping_type": MappingType.ASYMMETRIC, "target_dtype": torch.int8,
      "granularity": PerToken()}, (2, 3, 8), torch.int8),
    ({"mapping_type": MappingType.SYMMETRIC, "target_dtype": torch.int8,
      "granularity": PerRow()}, (6, 8), torch.int8),
    ({"mapping_type": MappingType.ASYMMETRIC, "target_dtype": torch.uint4,
      "granularity": PerBlock((2, 4))}, (6, 8), torch.uint4),
    ({"mapping_type": MappingType.SYMMETRIC_NO_CLIPPING_ERR, "target_dtype": torch.int4,
      "granularity": PerGroup(4)}, (6, 8), torch.int4),
    ({"mapping_type": MappingType.SYMMETRIC, "target_dtype": TorchAODType.INT4,
      "granularity": PerGroup(4)}, (6, 8), torch.int4),
    ({"mapping_type": MappingType.ASYMMETRIC, "target_dtype": torch.uint2,
      "granularity": PerAxis(1)}, (6, 8), torch.int32),  # int32 with bounds [0, 3]
    ({"mapping_type": MappingType.ASYMMETRIC, "target_dtype": torch.uint8,
      "granularity": PerAxis(0), "zero_point_domain": ZeroPointDomain.NONE}, (6, 8), torch.uint8),
    ({"mapping_type": MappingType.SYMMETRIC, "target_dtype": torch.float8_e4m3fn,
      "granularity": PerAxis(0)}, (6, 8), torch.float8_e4m3fn),
]
CASE_IDS = ["tensor-uint8", "axis-int8", "group-int8", "token", "row", "block-uint4",
            "group-int4-noclip", "group-aod-int4", "axis1-uint2", "no-zero-point", "axis-fp8"]


def _batches(shape: tuple[int, ...], n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (1.0 + i) for i in range(n)]


def _reference(fq: AffineFakeQuantize, x: torch.Tensor, grid: torch.dtype) -> torch.Tensor:
    obs = fq.activation_post_process
    scale, zp = obs.calculate_qparams()
    block = get_block_size(x.shape, obs.granularity)
    if obs.zero_point_domain is ZeroPointDomain.NONE:
        assert zp is None
    qmin, qmax = (obs.quant_min, obs.quant_max)
    if grid is torch.int32:
        qmin, qmax = 0, 3
    return fake_quantize_affine(x, block, scale, zp, grid, qmin, qmax)


# ---- forward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,shape,grid", CASES, ids=CASE_IDS)
def test_output_equals_fake_quantize_affine_with_observer_qparams(kwargs, shape, grid):
    fq = AffineFakeQuantize(**kwargs)
    for x in _batches(shape):
        y = fq(x)
        assert torch.equal(y, _reference(fq, x, grid))
    assert fq.block_size == get_block_size(shape, kwargs["granularity"])
    scale, _ = fq.calculate_qparams()
    assert torch.equal(fq.scale, scale.float())
    assert fq.zero_point.dtype == torch.int32


@pytest.mark.parametrize(
    "granularity,ref_observer",
    [
        (PerTensor(), lambda: tq.MovingAverageMinMaxObserver.with_args(averaging_constant=0.5)),
        (PerAxis(0), lambda: tq.MovingAveragePerChannelMinMaxObserver.with_args(
            averaging_constant=0.5, ch_axis=0)),
    ],
    ids=["tensor", "channel"],
)
@pytest.mark.parametrize("mapping", [MappingType.ASYMMETRIC, MappingType.SYMMETRIC],
                         ids=["affine", "symmetric"])
def test_matches_upstream_fake_quantize_bit_for_bit(granularity, ref_observer, mapping):
    symmetric = mapping is MappingType.SYMMETRIC
    per_channel = isinstance(granularity, PerAxis)
    qscheme = {(False, False): torch.per_tensor_affine, (True, False): torch.per_tensor_symmetric,
               (False, True): torch.per_channel_affine,
               (True, True): torch.per_channel_symmetric}[(symmetric, per_channel)]
    dtype, qdtype = (torch.int8, torch.qint8) if symmetric else (torch.uint8, torch.quint8)
    ours = AffineFakeQuantize(observer=AffineQuantizedMovingAverageMinMaxObserver,
                              mapping_type=mapping, target_dtype=dtype, granularity=granularity,
                              averaging_constant=0.5)
    theirs = tq.FakeQuantize(observer=ref_observer(), dtype=qdtype, qscheme=qscheme,
                             quant_min=torch.iinfo(dtype).min, quant_max=torch.iinfo(dtype).max)
    for i, x in enumerate(_batches((6, 10), n=4, seed=1)):
        if i == 2:  # frozen parameters from here on, so that new data clamps
            ours.apply(disable_observer)
            theirs.apply(tq.disable_observer)
            x = x * 4
        x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
        weight = torch.linspace(-1.0, 2.0, x.numel()).reshape(x.shape)
        (y_ours * weight).sum().backward()
        (y_theirs * weight).sum().backward()
        assert torch.equal(y_ours, y_theirs), f"batch {i}"
        assert torch.equal(x_ours.grad, x_theirs.grad), f"batch {i}"
        assert torch.equal(ours.scale.reshape(-1), theirs.scale)
        assert torch.equal(ours.zero_point.reshape(-1), theirs.zero_point)


# ---- gradient ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,shape,grid", CASES, ids=CASE_IDS)
def test_gradient_is_straight_through_inside_the_range_and_zero_outside(kwargs, shape, grid):
    fq = AffineFakeQuantize(**kwargs)
    fq(torch.randn(shape))  # calibrate on a narrow range ...
    fq.apply(disable_observer)
    x = (torch.randn(shape) * 3).requires_grad_()  # ... then feed a wider one
    y = fq(x)
    dy = torch.linspace(-1.0, 2.0, x.numel()).reshape(shape)
    y.backward(dy)
    block = get_block_size(shape, kwargs["granularity"])
    if grid.is_floating_point:
        fmax = torch.finfo(grid).max
        s = fq.scale.reshape([n // b for n, b in zip(shape, block)])
        s = s.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
        inside = (x.detach() / s).abs() <= fmax
    else:
        # the unclamped integer level, from the numerics with a range nothing clamps in
        zp = None if kwargs.get("zero_point_domain") is ZeroPointDomain.NONE else fq.zero_point
        level = quantize_affine(x.detach(), block, fq.scale, zp, torch.int32).float()
        qmin, qmax = affine_qrange(fq.target_dtype, fq.quant_min, fq.quant_max)
        inside = (level >= qmin) & (level <= qmax)
        assert not inside.all(), "the wide batch should clamp somewhere"
    assert inside.any()
    assert torch.equal(x.grad, dy * inside)


def test_qparams_get_no_gradient_and_input_without_grad_works():
    fq = AffineFakeQuantize(mapping_type=MappingType.SYMMETRIC, target_dtype=torch.int8,
                            granularity=PerGroup(4))
    y = fq(torch.randn(2, 8))
    assert not y.requires_grad
    assert not fq.scale.requires_grad


# ---- switches ---------------------------------------------------------------------------------


def test_is_a_fake_quantize_base_and_obeys_the_switches():
    fq = AffineFakeQuantize(mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.uint8,
                            granularity=PerAxis(0))
    assert isinstance(fq, FakeQuantizeBase)
    fq(torch.randn(4, 8))
    fq.apply(disable_observer)
    frozen = fq.scale.clone()
    fq(torch.randn(4, 8) * 10)
    assert torch.equal(fq.scale, frozen)
    fq.enable_observer()
    fq.apply(disable_fake_quant)
    x = torch.randn(4, 8) * 10
    assert fq(x) is x  # identity, but the observer still widens
    assert (fq.scale > frozen).all()


def test_disabled_observer_before_any_data_explains_what_to_do():
    fq = AffineFakeQuantize(mapping_type=MappingType.SYMMETRIC, target_dtype=torch.int8,
                            granularity=PerAxis(0))
    fq.disable_observer()
    with pytest.raises(ValueError, match="4 blocks.*1 scales.*observer enabled"):
        fq(torch.randn(4, 8))


def test_per_tensor_frozen_parameters_follow_any_batch_size():
    fq = AffineFakeQuantize(mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.uint8,
                            granularity=PerTensor())
    fq(torch.randn(2, 8))
    fq.disable_observer()
    x = torch.randn(5, 8)
    assert torch.equal(fq(x), _reference(fq, x, torch.uint8))
    assert fq.block_size == (5, 8)


def test_state_dict_round_trip_restores_block_wise_parameters():
    make = default_affine_per_axis_fake_quant
    fq = make()
    for x in _batches((6, 8)):
        fq(x)
    fresh = make()
    fresh.load_state_dict(fq.state_dict())
    assert fresh.scale.shape == fq.scale.shape == (6,)
    fresh.disable_observer()
    fq.disable_observer()
    x = torch.randn(6, 8)
    assert torch.equal(fresh(x), fq(x))


# ---- dynamic ----------------------------------------------------------------------------------


def _observed_module(fq: nn.Module) -> tuple[fx.GraphModule, fx.Node]:
    root = nn.Module()
    root.fq = fq
    graph = fx.Graph()
    node = graph.call_module("fq", (graph.placeholder("x"),))
    graph.output(node)
    return fx.GraphModule(root, graph), node


def test_dynamic_chooses_per_batch_like_the_converted_graph():
    fq = AffineFakeQuantize(observer=AffineQuantizedPlaceholderObserver, is_dynamic=True,
                            mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.int8,
                            granularity=PerToken())
    assert fq.is_dynamic and fq.activation_post_process.is_dynamic
    gm, node = _observed_module(fq)
    trained = {}
    for s in (0.5, 3.0):
        x = torch.randn(3, 8) * s
        scale, zp = choose_qparams_affine(x, MappingType.ASYMMETRIC, (1, 8), torch.int8)
        trained[s] = gm(x)
        assert torch.equal(trained[s], fake_quantize_affine(x, (1, 8), scale, zp, torch.int8))
        assert torch.equal(fq.scale, scale)
    fq.convert(gm, node)
    gm.recompile()
    torch.manual_seed(0)
    x = torch.randn(3, 8) * 5
    assert torch.equal(gm(x), AffineFakeQuantize(
        observer=AffineQuantizedPlaceholderObserver, is_dynamic=True,
        mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.int8, granularity=PerToken())(x))


def test_static_convert_matches_the_frozen_fake_quantization():
    fq = default_groupwise_fake_quant(granularity=PerGroup(4))
    gm, node = _observed_module(fq)
    for x in _batches((6, 8)):
        gm(x)
    fq.disable_observer()
    x = torch.randn(6, 8) * 2
    expected = fq(x)
    fq.convert(gm, node)
    gm.recompile()
    assert not any(n.op == "call_module" for n in gm.graph.nodes)
    assert torch.equal(gm(x), expected)


# ---- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctor,target,granularity,mapping",
    [
        (default_affine_fake_quant, torch.uint8, PerTensor(), MappingType.ASYMMETRIC),
        (default_groupwise_fake_quant, torch.int8, PerGroup(128), MappingType.SYMMETRIC),
        (default_affine_per_axis_fake_quant, torch.int8, PerAxis(0), MappingType.SYMMETRIC),
    ],
    ids=["affine", "groupwise", "per-axis"],
)
def test_default_constructors(ctor, target, granularity, mapping):
    fq = ctor()
    assert (fq.target_dtype, fq.granularity, fq.mapping_type) == (target, granularity, mapping)
    assert isinstance(fq.activation_post_process, AffineQuantizedMinMaxObserver)
    assert ctor() is not fq
    x = torch.randn(4, 256)
    assert torch.equal(fq(x), _reference(fq, x, target))


def test_accepts_what_a_quantization_spec_passes():
    ctor = AffineFakeQuantize.with_args(observer=AffineQuantizedPlaceholderObserver,
                                        mapping_type=MappingType.SYMMETRIC,
                                        target_dtype=torch.int8, granularity=PerToken())
    fq = ctor(dtype=torch.int8, qscheme=torch.per_tensor_symmetric, quant_min=-127,
              quant_max=127, is_dynamic=True)
    assert (fq.quant_min, fq.quant_max, fq.is_dynamic) == (-127, 127, True)


def test_observer_bound_dynamic_survives_the_default_is_dynamic():
    fq = AffineFakeQuantize(observer=AffineQuantizedPlaceholderObserver.with_args(is_dynamic=True),
                            mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.int8,
                            granularity=PerToken())
    assert fq.is_dynamic


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"observer": MinMaxObserver}, TypeError, "needs an affine observer"),
        ({"is_dynamic": True, "mapping_type": MappingType.SYMMETRIC, "target_dtype": torch.int8,
          "granularity": PerToken()}, ValueError, "needs a dynamic observer"),
        ({"mapping_type": MappingType.ASYMMETRIC, "target_dtype": torch.uint4,
          "granularity": PerGroup(4), "preserve_zero": False,
          "zero_point_domain": ZeroPointDomain.FLOAT}, NotImplementedError, "float zero point"),
    ],
    ids=["not-affine", "dynamic-minmax", "float-zero-point"],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        AffineFakeQuantize(**kwargs)


def test_repr_names_the_configuration():
    text = repr(default_affine_per_axis_fake_quant())
    assert "granularity=PerAxis(axis=0)" in text and "target_dtype=torch.int8" in text
