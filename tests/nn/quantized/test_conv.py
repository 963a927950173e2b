"""fxquant.nn.quantized Conv*/ConvTranspose* against torch.ao.nn.quantized (bit-exact)."""

from __future__ import annotations

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
