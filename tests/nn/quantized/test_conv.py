"""fxquant.nn.quantized Conv*/ConvTranspose* against torch.ao.nn.quantized (bit-exact)."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import pytest
import torch
import torch.ao.nn.intrinsic as up_nni
import torch.ao.nn.intrinsic.qat as up_nniqat
import torch.ao.nn.quantized as up_nnq
import torch.ao.quantization as tq
from nn.quantized.oracle import (
    ENGINES,
    QCONFIG_IDS,
    QCONFIGS,
    assert_same_qtensor,
    assert_same_state_dict,
    observed_pair,
    quantize_input,
    quantized_engine,
    save_load,
)

import fxquant
import fxquant.nn.quantized as nnq
from fxquant.nn._errors import QuantizedInputError
from fxquant.nn.quantized.conv import packs_for_onednn
from fxquant.nn.quantized.utils import FromFloatError

# (id, class name, float constructor, input shape)
CONVS = [
    ("conv1d", "Conv1d", lambda: torch.nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 9)),
    ("conv1d_reflect", "Conv1d", lambda: torch.nn.Conv1d(4, 6, 3, padding=1, padding_mode="reflect"), (2, 4, 9)),
    ("conv2d", "Conv2d", lambda: torch.nn.Conv2d(4, 6, 3, padding=1), (2, 4, 7, 7)),
    ("conv2d_groups_dilation", "Conv2d", lambda: torch.nn.Conv2d(4, 8, 3, dilation=2, groups=2, bias=False), (2, 4, 9, 9)),
    ("conv2d_depthwise", "Conv2d", lambda: torch.nn.Conv2d(4, 4, 3, padding=1, groups=4), (2, 4, 7, 7)),
    ("conv2d_reflect", "Conv2d", lambda: torch.nn.Conv2d(4, 6, 3, padding=(1, 2), padding_mode="reflect"), (2, 4, 7, 7)),
    ("conv3d", "Conv3d", lambda: torch.nn.Conv3d(4, 6, 3, padding=1), (1, 4, 5, 5, 5)),
]
TRANSPOSED = [
    ("conv_transpose1d", "ConvTranspose1d", lambda: torch.nn.ConvTranspose1d(4, 6, 3, stride=2), (2, 4, 9)),
    ("conv_transpose2d", "ConvTranspose2d", lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (2, 4, 7, 7)),
    ("conv_transpose2d_groups", "ConvTranspose2d", lambda: torch.nn.ConvTranspose2d(4, 6, 3, groups=2, bias=False), (2, 4, 5, 5)),
    ("conv_transpose3d", "ConvTranspose3d", lambda: torch.nn.ConvTranspose3d(4, 6, 3, stride=2), (1, 4, 3, 3, 3)),
]
CASES = [pytest.param(*c[1:], "per_tensor", id=f"{c[0]}-per_tensor") for c in CONVS + TRANSPOSED]
# the transposed-conv kernels take per-tensor weights only
CASES += [pytest.param(*c[1:], "per_channel", id=f"{c[0]}-per_channel") for c in CONVS]


def _pair(name, make, shape, qconfig_id):
    _, ours_qc, theirs_qc = QCONFIGS[QCONFIG_IDS.index(qconfig_id)]
    calib = torch.randn(shape)
    ours_f, theirs_f = observed_pair(make, ours_qc, theirs_qc, calib)
    return getattr(nnq, name).from_float(ours_f), getattr(up_nnq, name).from_float(theirs_f), calib


def _engine_cases():
    for engine in ENGINES:
        for case in CASES:
            # qnnpack's conv_transpose3d on this torch build returns different integers on
            # every call (upstream's module too: ~half the outputs change between two calls on
            # the same input), so there is nothing deterministic to compare against.
            if engine == "qnnpack" and case.values[0] == "ConvTranspose3d":
                continue
            yield pytest.param(engine, *case.values, id=f"{engine}-{case.id}")


@pytest.mark.parametrize(("engine", "name", "make", "shape", "qconfig_id"), list(_engine_cases()))
def test_from_float_output_is_bit_exact_with_upstream(engine, name, make, shape, qconfig_id):
    with quantized_engine(engine):
        ours, theirs, calib = _pair(name, make, shape, qconfig_id)
        qx = quantize_input(calib)
        assert (ours.scale, ours.zero_point) == (theirs.scale, theirs.zero_point)
        # qnnpack cannot unpack 3-d conv weights (for upstream either): compare outputs only
        if not (engine == "qnnpack" and name.endswith("3d")):
            assert_same_qtensor(ours.weight(), theirs.weight())
        assert_same_qtensor(ours(qx), theirs(qx))


@pytest.mark.parametrize(("name", "make", "shape", "qconfig_id"), CASES)
def test_state_dict_repr_and_save_load_match_upstream(name, make, shape, qconfig_id):
    ours, theirs, calib = _pair(name, make, shape, qconfig_id)
    qx = quantize_input(calib)
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())

    # a differently initialised module of each library takes the other's state dict
    other_ours, other_theirs, _ = _pair(name, make, shape, qconfig_id)
    other_theirs.load_state_dict(ours.state_dict())
    assert_same_qtensor(other_theirs(qx), theirs(qx))
    other_ours.load_state_dict(theirs.state_dict())
    assert_same_qtensor(other_ours(qx), ours(qx))

    assert_same_qtensor(save_load(ours, weights_only=False)(qx), ours(qx))
    other_ours.load_state_dict(save_load(ours.state_dict(), weights_only=True))
    assert_same_qtensor(other_ours(qx), ours(qx))


@pytest.mark.parametrize(("name", "make", "shape"), [c[1:] for c in CONVS[:1] + CONVS[2:3] + CONVS[6:]],
                         ids=["conv1d", "conv2d", "conv3d"])
def test_from_reference_matches_upstream(name, make, shape):
    import torch.ao.nn.quantized.reference as up_ref
    from torch.ao.quantization.utils import get_qparam_dict

    float_conv = make()
    observer = tq.default_per_channel_weight_observer()
    observer(float_conv.weight)
    ref = getattr(up_ref, name).from_float(float_conv, get_qparam_dict(observer))
    ours = getattr(nnq, name).from_reference(ref, 0.04, 7)
    theirs = getattr(up_nnq, name).from_reference(ref, 0.04, 7)
    qx = quantize_input(torch.randn(shape))
    assert_same_qtensor(ours(qx), theirs(qx))


def test_qat_conv_bn_is_folded_like_upstream():
    qconfig = tq.get_default_qat_qconfig("x86")
    bn = torch.nn.BatchNorm2d(6)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    fused = up_nni.ConvBn2d(torch.nn.Conv2d(4, 6, 3), bn)
    fused.qconfig = qconfig
    qat = up_nniqat.ConvBn2d.from_float(fused)
    qat.activation_post_process = qconfig.activation()
    x = torch.randn(2, 4, 7, 7)
    qat.activation_post_process(qat(x))
    qat.eval()
    ours = nnq.Conv2d.from_float(_clone(qat))
    theirs = up_nnq.Conv2d.from_float(_clone(qat))
    qx = quantize_input(x)
    assert_same_qtensor(ours(qx), theirs(qx))


def _clone(module):
    import copy

    return copy.deepcopy(module)


def test_padding_same_becomes_symmetric_integer_padding():
    make = lambda: torch.nn.Conv2d(4, 6, 3, padding="same")
    ours_f, _ = observed_pair(make, fxquant.default_qconfig, tq.default_qconfig, torch.randn(1, 4, 6, 6))
    ours = nnq.Conv2d.from_float(ours_f)
    assert ours.padding == (1, 1)
    out = ours(quantize_input(torch.randn(1, 4, 6, 6)))
    assert out.shape == (1, 6, 6, 6)
    with pytest.raises(ValueError, match="symmetric"):
        nnq.Conv2d(4, 6, 2, padding="same")


def test_transposed_conv_rejects_per_channel_weights_clearly():
    ours_f, _ = observed_pair(
        lambda: torch.nn.ConvTranspose2d(4, 6, 3), fxquant.default_per_channel_qconfig,
        tq.default_qconfig, torch.randn(1, 4, 5, 5),
    )
    with pytest.raises(FromFloatError, match="per-tensor weights only"):
        nnq.ConvTranspose2d.from_float(ours_f)


@pytest.mark.parametrize("name", ["Conv2d", "ConvTranspose2d"])
def test_float_input_raises_clear_error(name):
    module = getattr(nnq, name)(4, 6, 3)
    with pytest.raises(QuantizedInputError, match=f"Quantized{name}.*QuantStub"):
        module(torch.randn(1, 4, 5, 5))


def test_wrong_rank_input_names_expected_shape():
    with pytest.raises(ValueError, match=r"QuantizedConv2d expects input of shape \(N, C, H, W\)"):
        nnq.Conv2d(4, 6, 3)(quantize_input(torch.randn(4, 5, 5)))


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="divisible by groups"):
        nnq.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nnq.Conv2d(3, 6, 3, padding_mode="circular")
    with pytest.raises(ValueError, match="reflect"):
        nnq.Conv3d(3, 6, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="zeros"):
        nnq.ConvTranspose2d(3, 6, 3, padding_mode="reflect")


def test_from_float_rejects_other_module_types():
    ours_f, _ = observed_pair(lambda: torch.nn.Conv2d(4, 6, 3), fxquant.default_qconfig, tq.default_qconfig,
                              torch.randn(1, 4, 5, 5))
    with pytest.raises(FromFloatError, match="Conv1d"):
        nnq.Conv1d.from_float(ours_f)


# ---- depthwise convolutions packed for oneDNN under x86 (packs_for_onednn) ----------------
# 112 groups: above the 100 up to which torch's x86 engine already picks oneDNN itself; stride
# 2 without padding (EfficientNet-Lite0's TF-padded shape): fbgemm's slow generic loop
DW = 112


def _dw_weight(channels: int = DW, kernel: int = 3, zero_point: int = 0) -> torch.Tensor:
    w = torch.randn(channels, 1, kernel, kernel, generator=torch.Generator().manual_seed(0))
    return torch.quantize_per_channel(
        w, w.abs().amax((1, 2, 3)) / 127, torch.full((channels,), zero_point, dtype=torch.long), 0, torch.qint8
    )


def _dw_input(size: int = 13, channels: int = DW) -> torch.Tensor:
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(1)).relu() * 3
    return torch.quantize_per_tensor(x, 0.03, 0, torch.quint8)


@pytest.fixture
def pack_engines(monkeypatch):
    """The quantized engine current at each prepack call of Conv2d / ConvReLU2d."""
    seen: list[str] = []
    real = torch.ops.quantized.conv2d_prepack

    def recording(*args):
        seen.append(torch.backends.quantized.engine)
        return real(*args)

    for klass in (nnq.Conv2d, fxquant.nn.intrinsic.quantized.ConvReLU2d):
        monkeypatch.setattr(klass, "_PREPACK", recording)
    return seen


def _dw_module(cls: type = nnq.Conv2d, stride: int = 2, padding: int = 0) -> torch.nn.Module:
    with quantized_engine("x86"):
        m = cls(DW, DW, 3, stride, padding, groups=DW)
        m.set_weight_bias(_dw_weight(), torch.linspace(-1, 1, DW))
    m.scale, m.zero_point = 0.0625, 64  # exact in float32, as state_dict stores it
    return m


def _conv(stride: int = 2, padding: int = 0, dilation: int = 1, groups: int = DW) -> tuple:
    return ((stride, stride), (padding, padding), (dilation, dilation), groups)


@pytest.mark.parametrize(
    ("case", "weight", "conv", "ndim", "engine", "expected"),
    [
        ("dw_s2_unpadded_x86", lambda: _dw_weight(), _conv(), 2, "x86", True),
        ("dw_s1_unpadded_x86", lambda: _dw_weight(), _conv(1, 0), 2, "x86", True),
        ("dw_5x5_s2_unpadded_x86", lambda: _dw_weight(kernel=5), _conv(), 2, "x86", True),
        ("dw_groups_not_multiple_of_8", lambda: _dw_weight(116), _conv(1, 1, groups=116), 2, "x86", True),
        ("dw_dilated", lambda: _dw_weight(), _conv(1, 2, 2), 2, "x86", True),
        ("dw_small_unpadded_x86", lambda: _dw_weight(8), _conv(groups=8), 2, "x86", True),
        ("dw_s1_same_padding", lambda: _dw_weight(), _conv(1, 1), 2, "x86", True),
        ("dw_5x5_s2_same_padding", lambda: _dw_weight(kernel=5), _conv(2, 2), 2, "x86", True),
        ("dw_channel_multiplier_2", lambda: torch.quantize_per_tensor(torch.randn(2 * DW, 1, 3, 3), 0.1, 0, torch.qint8),
         _conv(1, 1), 2, "x86", False),
        ("dw_fbgemm_engine", lambda: _dw_weight(), _conv(), 2, "fbgemm", False),
        ("dw_qnnpack_engine", lambda: _dw_weight(), _conv(), 2, "qnnpack", False),
        ("asymmetric_weight", lambda: _dw_weight(zero_point=1), _conv(), 2, "x86", False),
        ("grouped_not_depthwise", lambda: torch.quantize_per_tensor(torch.randn(8, 2, 3, 3), 0.1, 0, torch.qint8),
         _conv(groups=4), 2, "x86", False),
        ("dense", lambda: torch.quantize_per_tensor(torch.randn(8, 1, 3, 3), 0.1, 0, torch.qint8), _conv(groups=1),
         2, "x86", False),
        ("conv1d", lambda: torch.quantize_per_tensor(torch.randn(8, 1, 3), 0.1, 0, torch.qint8),
         ((2,), (0,), (1,), 8), 1, "x86", False),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_packs_for_onednn_rule(case, weight, conv, ndim, engine, expected):
    if engine not in torch.backends.quantized.supported_engines:
        pytest.fail(f"engine {engine} missing from this torch build")
    with quantized_engine(engine):
        assert packs_for_onednn(weight(), conv, ndim) is expected


def test_depthwise_x86_is_packed_under_onednn_and_bit_exact_with_upstream(pack_engines):
    """Lite0's slow shape: packed under oneDNN (engine restored after), same integers as
    upstream's fbgemm-packed module, also when called under another engine."""
    m = _dw_module()
    assert set(pack_engines) == {"onednn"} and torch.backends.quantized.engine == "x86"  # placeholder, weight
    theirs = up_nnq.Conv2d(DW, DW, 3, 2, 0, groups=DW)
    with quantized_engine("x86"):
        theirs.set_weight_bias(*m._weight_bias())
        theirs.scale, theirs.zero_point = m.scale, m.zero_point
        x = _dw_input()
        expected = theirs(x)
        assert_same_qtensor(m(x), expected)
    with quantized_engine("fbgemm"):
        assert_same_qtensor(m(x), expected)


def test_full_range_activations_stay_exact_where_fbgemm_depthwise_saturates(pack_engines):
    """fbgemm's depthwise kernel multiplies uint8 by int8 in 16-bit pairs, which saturate for
    activations above 127 (what ``reduce_range`` guards against); the X86 and oneDNN
    qconfigs use the full [0, 255]. Packed for oneDNN, the module computes the reference
    integers; upstream's module under the x86 engine is off by many steps."""
    torch.manual_seed(0)
    channels = 128
    weight = torch.randn(channels, 1, 3, 3)
    qw = torch.quantize_per_channel(weight, weight.abs().amax((1, 2, 3)) / 127,
                                    torch.zeros(channels, dtype=torch.long), 0, torch.qint8)
    bias = torch.randn(channels)
    x = torch.quantize_per_tensor(torch.rand(1, channels, 14, 14) * 4, 4 / 255, 3, torch.quint8)
    reference = torch.nn.functional.conv2d(x.dequantize(), qw.dequantize(), bias, padding=1, groups=channels)
    scale, zero_point = float(reference.max() - reference.min()) / 255, 128
    expected = torch.quantize_per_tensor(reference, scale, zero_point, torch.quint8).int_repr().int()
    with quantized_engine("x86"):
        ours = nnq.Conv2d(channels, channels, 3, 1, 1, groups=channels)
        ours.set_weight_bias(qw, bias)
        theirs = up_nnq.Conv2d(channels, channels, 3, 1, 1, groups=channels)
        theirs.set_weight_bias(qw, bias)
    assert pack_engines[-1] == "onednn"
    for m in (ours, theirs):
        m.scale, m.zero_point = scale, zero_point
    with quantized_engine("x86"):
        assert int((ours(x).int_repr().int() - expected).abs().max()) <= 1
        assert int((theirs(x).int_repr().int() - expected).abs().max()) > 10  # measured: 29


def _round_trips() -> dict[str, Callable[[torch.nn.Module], torch.nn.Module]]:
    def state_dict(m: torch.nn.Module) -> torch.nn.Module:
        with quantized_engine("x86"):
            fresh = type(m)(DW, DW, 3, m.stride, m.padding, groups=DW)
            fresh.load_state_dict(m.state_dict())
        return fresh

    def torch_save(m: torch.nn.Module) -> torch.nn.Module:
        buffer = io.BytesIO()
        torch.save(m, buffer)
        buffer.seek(0)
        with quantized_engine("x86"):
            return torch.load(buffer, weights_only=False)

    def pickled(m: torch.nn.Module) -> torch.nn.Module:
        with quantized_engine("x86"):
            return pickle.loads(pickle.dumps(m))

    def deep(m: torch.nn.Module) -> torch.nn.Module:
        with quantized_engine("x86"):
            return copy.deepcopy(m)

    return {"deepcopy": deep, "state_dict": state_dict, "pickle": pickled, "torch_save": torch_save}


@pytest.mark.parametrize("cls", ["Conv2d", "ConvReLU2d"])
@pytest.mark.parametrize("trip", sorted(_round_trips()))
def test_round_trips_keep_the_onednn_packing(cls, trip, pack_engines):
    klass = nnq.Conv2d if cls == "Conv2d" else fxquant.nn.intrinsic.quantized.ConvReLU2d
    m, x = _dw_module(klass), _dw_input()
    with quantized_engine("x86"):
        before = m(x)
    del pack_engines[:]
    copied = _round_trips()[trip](m)
    # the last pack is the copy's real weight (state_dict's fresh module packs a placeholder first)
    assert pack_engines and pack_engines[-1] == "onednn"
    with quantized_engine("x86"):
        assert_same_qtensor(copied(x), before)
    assert type(copied) is klass
    assert copied.scale == m.scale and copied.zero_point == m.zero_point


def test_eager_convert_packs_depthwise_for_onednn(pack_engines):
    """fxquant.eager.convert builds the same modules, so the same rule applies."""
    import fxquant.eager as fq
    from fxquant.qconfig import get_default_qconfig

    conv = torch.nn.Conv2d(DW, DW, 3, stride=2, groups=DW)
    float_model = torch.nn.Sequential(fq.QuantStub(), conv, fq.DeQuantStub()).eval()
    with quantized_engine("x86"):
        float_model.qconfig = get_default_qconfig("x86")
        prepared = fq.prepare(float_model)
        prepared(torch.randn(1, DW, 13, 13, generator=torch.Generator().manual_seed(2)))
        model = fq.convert(prepared)
    assert type(model[1]) is nnq.Conv2d
    assert pack_engines[-1] == "onednn"


@pytest.mark.parametrize(("channels", "kernel", "size"), [(144, 5, 43), (240, 3, 21), (672, 5, 13)],
                         ids=["lite0_blocks3", "lite0_blocks5", "lite0_blocks11"])
def test_lite0_depthwise_shapes_within_one_step_of_upstream(channels, kernel, size):
    """EfficientNet-Lite0's stride-2 TF-padded depthwise convs (batch 2, 160x160 photos):
    oneDNN rounds requantization ties to even (as torch.quantize_per_tensor does), fbgemm
    rounds them up, so a few outputs differ from upstream's by exactly one step."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(channels, 1, kernel, kernel, generator=gen)
    qw = torch.quantize_per_channel(w, w.abs().amax((1, 2, 3)) / 127, torch.zeros(channels, dtype=torch.long), 0, torch.qint8)
    bias = torch.randn(channels, generator=gen)
    x = torch.quantize_per_tensor(torch.randn(2, channels, size, size, generator=gen).relu() * 3, 0.03, 0, torch.quint8)
    with quantized_engine("x86"):
        ours = nnq.Conv2d(channels, channels, kernel, 2, groups=channels)
        theirs = up_nnq.Conv2d(channels, channels, kernel, 2, groups=channels)
        for m in (ours, theirs):
            m.set_weight_bias(qw, bias)
            m.scale, m.zero_point = 0.02, 64
        diff = (ours(x).int_repr().int() - theirs(x).int_repr().int()).abs()
        assert packs_for_onednn(qw, _conv(groups=channels), 2)
    assert diff.max() <= 1
    assert (diff > 0).float().mean() < 1e-3
