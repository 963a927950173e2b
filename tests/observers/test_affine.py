"""AffineQuantizedObserverBase / AffineQuantizedMinMaxObserver: construction like upstream's,
qparams equal to the block-wise numerics and to upstream's min/max observers, and convert()."""

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
from fxquant.numerics.dtypes import QuantizationRangeError, UnsupportedDTypeError
from fxquant.numerics.ops import quantized_decomposed as qd
from fxquant.observers.affine import (
    AffineQuantizedMinMaxObserver,
    AffineQuantizedObserverBase,
    MappingType,
    TorchAODType,
    UncalibratedObserverError,
    ZeroPointDomain,
)
from fxquant.observers.base import NonFiniteInputError, QuantizationWarning
from fxquant.observers.granularity import (
    PerAxis,
    PerBlock,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    get_block_size,
)

EPS = torch.finfo(torch.float32).eps


# ---- enums and the base class -------------------------------------------------------------


@pytest.mark.parametrize(
    "ours", [MappingType, ZeroPointDomain, TorchAODType], ids=lambda e: e.__name__
)
def test_enum_members_match_upstream(ours):
    theirs = getattr(upstream, ours.__name__)
    assert [(m.name, m.value) for m in ours] == [(m.name, m.value) for m in theirs]


class _Recorder(AffineQuantizedObserverBase):
    def forward(self, input):
        self.block_size = get_block_size(input.shape, self.granularity)
        self.original_dtype = input.dtype
        return input

    def calculate_qparams(self):
        return torch.ones(1), torch.zeros(1)


class _UpstreamRecorder(upstream.AffineQuantizedObserverBase):
    def forward(self, input):
        return input

    def calculate_qparams(self):
        return torch.ones(1), torch.zeros(1)


_ATTRS = ["target_dtype", "quant_min", "quant_max", "eps", "scale_dtype", "zero_point_dtype",
          "preserve_zero", "block_size", "original_dtype"]
CTOR_CASES = [
    {"mapping": "SYMMETRIC", "target_dtype": torch.int8, "axis": 0},
    {"mapping": "ASYMMETRIC", "target_dtype": torch.uint8, "axis": 1, "quant_min": 0, "quant_max": 127,
         "eps": 1e-5, "scale_dtype": torch.float16, "zero_point_dtype": torch.int32},
    {"mapping": "ASYMMETRIC", "target_dtype": torch.int32, "axis": -1, "preserve_zero": False,
         "domain": "FLOAT", "unknown_extra_arg": 3},
]


@pytest.mark.parametrize("case", CTOR_CASES, ids=["defaults", "all-args", "extra-kwargs"])
def test_constructor_stores_what_upstream_stores(case):
    case = dict(case)
    mapping, axis, domain = case.pop("mapping"), case.pop("axis"), case.pop("domain", "INT")
    ours = _Recorder(MappingType[mapping], granularity=PerAxis(axis),
                     zero_point_domain=ZeroPointDomain[domain], **case)
    theirs = _UpstreamRecorder(upstream.MappingType[mapping], granularity=upstream.PerAxis(axis),
                               zero_point_domain=upstream.ZeroPointDomain[domain], **case)
    for attr in _ATTRS:
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.mapping_type.name == theirs.mapping_type.name
    assert ours.zero_point_domain.name == theirs.zero_point_domain.name
    assert repr(ours.granularity) == repr(theirs.granularity)


def test_base_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        AffineQuantizedObserverBase(MappingType.SYMMETRIC, torch.int8, PerTensor())  # type: ignore[abstract]

    class NoQParams(AffineQuantizedObserverBase):
        def forward(self, input):
            return input

    with pytest.raises(TypeError, match="calculate_qparams"):
        NoQParams(MappingType.SYMMETRIC, torch.int8, PerTensor())  # type: ignore[abstract]


def test_with_args_makes_fresh_configured_instances():
    factory = AffineQuantizedMinMaxObserver.with_args(
        mapping_type=MappingType.ASYMMETRIC, target_dtype=torch.uint8, granularity=PerTensor()
    )
    a, b = factory(), factory(quant_max=127)
    assert a is not b and isinstance(a, AffineQuantizedMinMaxObserver)
    assert (a.target_dtype, a.quant_max, b.quant_max) == (torch.uint8, None, 127)
    calls = []
    callable_factory = _Recorder.with_callable_args(
        granularity=lambda: calls.append(1) or PerToken()
    ).with_args(mapping_type=MappingType.SYMMETRIC, target_dtype=torch.int8)
    assert callable_factory().granularity == PerToken() and callable_factory() is not None
    assert len(calls) == 2  # evaluated once per construction


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"granularity": None}, TypeError, "granularity must be a Granularity"),
        ({"mapping_type": "SYMMETRIC"}, TypeError, "mapping_type must be a MappingType"),
        ({"target_dtype": torch.float32}, UnsupportedDTypeError, "target dtype"),
        ({"target_dtype": torch.int4, "quant_min": -16}, QuantizationRangeError, "exceeds"),
        ({"zero_point_domain": "INT"}, TypeError, "zero_point_domain"),
    ],
    ids=["no-granularity", "mapping-str", "float-dtype", "range", "domain-str"],
)
def test_constructor_errors(kwargs, error, match):
    args = {"mapping_type": MappingType.SYMMETRIC, "target_dtype": torch.int8,
                "granularity": PerTensor()}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        AffineQuantizedMinMaxObserver(**args)


# ---- AffineQuantizedMinMaxObserver ----------------------------------------------------------

MAPPINGS = [(MappingType.ASYMMETRIC, torch.uint8), (MappingType.SYMMETRIC, torch.int8),
            (MappingType.SYMMETRIC_NO_CLIPPING_ERR, torch.int4)]
CONCAT_GRANULARITIES = [PerTensor(), PerAxis(-1), PerAxis(1), PerRow(dim=0)]


@pytest.mark.parametrize("mapping,dtype", MAPPINGS, ids=lambda v: str(v))
@pytest.mark.parametrize("granularity", CONCAT_GRANULARITIES, ids=repr)
def test_minmax_qparams_equal_choose_qparams_on_concatenated_batches(mapping, dtype, granularity):
    batches = [torch.randn(3, 4, 6) * s for s in (1.0, 3.0, 0.5)]
    obs = AffineQuantizedMinMaxObserver(mapping, dtype, granularity)
    for b in batches:
        assert obs(b) is b
    data = torch.cat(batches)
    expected = choose_qparams_affine(data, mapping, get_block_size(data.shape, granularity), dtype)
    scale, zp = obs.calculate_qparams()
    assert torch.equal(scale, expected[0]) and torch.equal(zp, expected[1])
    assert obs.block_size == get_block_size(batches[-1].shape, granularity)
    assert obs.original_dtype == torch.float32


@pytest.mark.parametrize("granularity", [PerToken(), PerGroup(3), PerBlock((2, 3))], ids=repr)
def test_minmax_keeps_running_range_per_block(granularity):
    x1, x2 = torch.randn(4, 6), torch.randn(4, 6) * 2
    obs = AffineQuantizedMinMaxObserver(MappingType.ASYMMETRIC, torch.int8, granularity)
    obs(x1)
    obs(x2)
    block = get_block_size(x1.shape, granularity)
    lo = blockwise_minmax(torch.minimum(x1, x2), block)[0]
    hi = blockwise_minmax(torch.maximum(x1, x2), block)[1]
    expected = choose_qparams_affine_with_min_max(lo, hi, MappingType.ASYMMETRIC, block, torch.int8)
    scale, zp = obs.calculate_qparams()
    assert torch.equal(scale, expected[0]) and torch.equal(zp, expected[1])


@pytest.mark.parametrize(
    "ours,ref",
    [
        ((MappingType.ASYMMETRIC, torch.uint8, PerTensor()),
         lambda: upstream.MinMaxObserver(dtype=torch.quint8)),
        ((MappingType.SYMMETRIC, torch.int8, PerTensor()),
         lambda: upstream.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)),
        ((MappingType.ASYMMETRIC, torch.uint8, PerAxis(1)),
         lambda: upstream.PerChannelMinMaxObserver(ch_axis=1, dtype=torch.quint8)),
        ((MappingType.SYMMETRIC, torch.int8, PerAxis(0)),
         lambda: upstream.PerChannelMinMaxObserver(
             ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)),
    ],
    ids=["tensor-affine", "tensor-symmetric", "channel-affine", "channel-symmetric"],
)
def test_minmax_matches_upstream_minmax_observers(ours, ref):
    mapping, dtype, granularity = ours
    obs, ref_obs = AffineQuantizedMinMaxObserver(mapping, dtype, granularity), ref()
    for s in (1.0, 4.0, 0.25):
        x = torch.randn(5, 7) * s + 0.3
        obs(x)
        ref_obs(x)
    scale, zp = obs.calculate_qparams()
    ref_scale, ref_zp = ref_obs.calculate_qparams()
    assert torch.equal(scale.reshape(-1), ref_scale)
    assert torch.equal(zp.long().reshape(-1), ref_zp)


def test_minmax_empty_batch_warns_and_keeps_state():
    obs = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerTensor())
    obs(torch.tensor([1.0, -2.0]))
    with pytest.warns(QuantizationWarning, match="empty"):
        obs(torch.empty(0))
    assert float(obs.min_val) == -2.0 and float(obs.max_val) == 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_minmax_non_finite_batch_raises(bad):
    obs = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerAxis(0))
    with pytest.raises(NonFiniteInputError, match="NaN or Inf"):
        obs(torch.tensor([[1.0, bad], [0.5, 0.25]]))
    assert obs.min_val.numel() == 0


def test_minmax_block_layout_change_is_an_error():
    obs = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerToken())
    obs(torch.randn(4, 8))
    with pytest.raises(ValueError, match="blocks but earlier batches gave"):
        obs(torch.randn(5, 8))


def test_minmax_before_data_raises():
    obs = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerTensor())
    with pytest.raises(UncalibratedObserverError, match="before the observer saw any data"):
        obs.calculate_qparams()


def test_minmax_state_dict_round_trip_and_reset():
    obs = AffineQuantizedMinMaxObserver(MappingType.ASYMMETRIC, torch.int8, PerAxis(0))
    obs(torch.randn(6, 4))
    fresh = AffineQuantizedMinMaxObserver(MappingType.ASYMMETRIC, torch.int8, PerAxis(0))
    fresh.load_state_dict(obs.state_dict())
    for a, b in zip(fresh.calculate_qparams(), obs.calculate_qparams()):
        assert torch.equal(a, b)
    obs.reset_min_max_vals()
    with pytest.raises(UncalibratedObserverError):
        obs.calculate_qparams()


def test_minmax_keeps_low_precision_dtypes():
    obs = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerAxis(0))
    obs(torch.randn(3, 4, dtype=torch.bfloat16))
    scale, zp = obs.calculate_qparams()
    assert obs.original_dtype == scale.dtype == zp.dtype == torch.bfloat16


# ---- convert ----------------------------------------------------------------------------------


def _observed_module(obs: AffineQuantizedObserverBase) -> tuple[fx.GraphModule, fx.Node]:
    root = nn.Module()
    root.obs = obs
    graph = fx.Graph()
    x = graph.placeholder("x")
    node = graph.call_module("obs", (x,))
    graph.output(graph.call_function(torch.neg, (node,)))
    return fx.GraphModule(root, graph), node


def _targets(gm: fx.GraphModule) -> list[object]:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


CONVERT_CASES = [
    (PerTensor(), torch.int8, (6, 8), qd.quantize_per_tensor.default,
     qd.dequantize_per_tensor.default),
    (PerAxis(0), torch.int8, (6, 8), qd.quantize_per_channel.default,
     qd.dequantize_per_channel.default),
    (PerAxis(1), torch.uint8, (2, 6, 4), qd.quantize_per_channel.default,
     qd.dequantize_per_channel.default),
    (PerToken(), torch.int8, (2, 3, 8), qd.quantize_per_token.default,
     qd.dequantize_per_token.default),
    (PerRow(), torch.int8, (4, 1), qd.quantize_per_token.default,
     qd.dequantize_per_token.default),
    (PerGroup(4), torch.int8, (6, 8), qd.quantize_per_channel_group.default,
     qd.dequantize_per_channel_group.default),
    (PerBlock((2, 4)), torch.int8, (6, 8), quantize_affine, dequantize_affine),
    (PerGroup(4), torch.int4, (6, 8), quantize_affine, dequantize_affine),
]


@pytest.mark.parametrize("mapping", [MappingType.ASYMMETRIC, MappingType.SYMMETRIC],
                         ids=lambda m: m.name)
@pytest.mark.parametrize(
    "granularity,dtype,shape,q_op,dq_op", CONVERT_CASES,
    ids=["tensor", "axis0", "axis1-uint8", "token", "row-1col", "group", "block", "group-int4"],
)
def test_convert_emits_qdq_with_frozen_qparams(mapping, granularity, dtype, shape, q_op, dq_op):
    obs = AffineQuantizedMinMaxObserver(mapping, dtype, granularity)
    gm, node = _observed_module(obs)
    x = torch.randn(shape) * 2
    gm(x)
    obs.convert(gm, node)
    gm.graph.lint()
    gm.recompile()
    targets = _targets(gm)
    assert targets[:2] == [q_op, dq_op] and targets[2] is torch.neg
    assert not any(n.op == "call_module" for n in gm.graph.nodes)
    block = obs.block_size
    scale, zp = obs.calculate_qparams()
    expected = dequantize_affine(quantize_affine(x, block, scale, zp, dtype), block, scale, zp)
    x2 = torch.randn(shape) * 3  # new data quantizes with the frozen parameters
    expected2 = dequantize_affine(quantize_affine(x2, block, scale, zp, dtype), block, scale, zp)
    assert torch.equal(gm(x), -expected)
    assert torch.equal(gm(x2), -expected2)


class _DynamicMinMax(AffineQuantizedMinMaxObserver):
    is_dynamic = True


def test_convert_dynamic_chooses_qparams_at_run_time():
    obs = _DynamicMinMax(MappingType.ASYMMETRIC, torch.int8, PerToken())
    gm, node = _observed_module(obs)
    gm(torch.randn(4, 8))
    obs.convert(gm, node)
    gm.graph.lint()
    gm.recompile()
    assert _targets(gm)[0] is choose_qparams_affine
    x = torch.randn(4, 8) * 5
    scale, zp = choose_qparams_affine(x, MappingType.ASYMMETRIC, (1, 8), torch.int8)
    expected = dequantize_affine(quantize_affine(x, (1, 8), scale, zp, torch.int8), (1, 8),
                                 scale, zp)
    assert torch.equal(gm(x), -expected)


def test_convert_registers_parameters_as_buffers():
    obs = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerAxis(0))
    gm, node = _observed_module(obs)
    gm(torch.randn(3, 5))
    obs.convert(gm, node)
    buffers = dict(gm.named_buffers())
    assert torch.equal(buffers["_scale0"], obs.calculate_qparams()[0])
    assert buffers["_zero_point0"].dtype == torch.int64


def test_convert_before_calibration_raises():
    obs = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerTensor())
    gm, node = _observed_module(obs)
    with pytest.raises(RuntimeError, match="has not observed any tensor"):
        obs.convert(gm, node)


def test_convert_float_zero_point_domain_is_not_supported():
    obs = AffineQuantizedMinMaxObserver(
        MappingType.ASYMMETRIC, torch.uint4, PerGroup(4), preserve_zero=False,
        zero_point_domain=ZeroPointDomain.FLOAT,
    )
    gm, node = _observed_module(obs)
    gm(torch.randn(2, 8))
    with pytest.raises(NotImplementedError, match="float zero point"):
        obs.convert(gm, node)

