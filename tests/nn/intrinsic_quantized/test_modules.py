"""fxquant.nn.intrinsic.quantized against torch.ao.nn.intrinsic.quantized (bit-exact).

Each float fused module is built twice from identical parts: fxquant's fused container
(``fxquant.nn.intrinsic``) for fxquant, upstream's for upstream."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic as up_nni
import torch.ao.nn.intrinsic.quantized as up_nniq
import torch.ao.quantization as tq
from nn.quantized.oracle import (
    ENGINES,
    assert_same_qtensor,
    assert_same_state_dict,
    observe,
    quantize_input,
    quantized_engine,
    save_load,
)

import fxquant
import fxquant.nn.intrinsic as nni
import fxquant.nn.intrinsic.quantized as nniq
from fxquant.nn._errors import QuantizedInputError
from fxquant.nn.quantized.utils import FromFloatError


def _bn(cls, n):
    bn = cls(n)
    bn.eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn


# (id, class name, parts, input shape, engines that have the kernel)
ALL = tuple(ENGINES)
FUSED = [
    ("linear_relu", "LinearReLU", lambda: (torch.nn.Linear(12, 8), torch.nn.ReLU()), (5, 12), ALL),
    ("conv_relu1d", "ConvReLU1d", lambda: (torch.nn.Conv1d(4, 6, 3, padding=1), torch.nn.ReLU()), (2, 4, 9), ALL),
    ("conv_relu2d", "ConvReLU2d", lambda: (torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU()), (2, 4, 7, 7), ALL),
    ("conv_relu2d_reflect", "ConvReLU2d",
     lambda: (torch.nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), torch.nn.ReLU()), (2, 4, 7, 7), ALL),
    ("conv_relu3d", "ConvReLU3d", lambda: (torch.nn.Conv3d(4, 6, 3), torch.nn.ReLU()), (1, 4, 5, 5, 5), ALL),
    ("bn_relu2d", "BNReLU2d", lambda: (_bn(torch.nn.BatchNorm2d, 4), torch.nn.ReLU()), (2, 4, 5, 5), ALL),
    ("bn_relu3d", "BNReLU3d", lambda: (_bn(torch.nn.BatchNorm3d, 4), torch.nn.ReLU()), (2, 4, 3, 3, 3), ALL),
    # leaky relu / tanh fusions exist on the onednn engine only
    ("linear_leaky_relu", "LinearLeakyReLU", lambda: (torch.nn.Linear(12, 8), torch.nn.LeakyReLU(0.1)),
     (5, 12), ("onednn",)),
    ("linear_tanh", "LinearTanh", lambda: (torch.nn.Linear(12, 8), torch.nn.Tanh()), (5, 12), ("onednn",)),
]


def _pair(name, make_parts, shape, qconfig_pair=(fxquant.default_per_channel_qconfig,
                                                 tq.default_per_channel_qconfig)):
    parts = make_parts()
    x = torch.randn(shape)
    ours_f = observe(getattr(nni, name)(*copy.deepcopy(parts)), qconfig_pair[0], x)
    theirs_f = observe(getattr(up_nni, name)(*copy.deepcopy(parts)), qconfig_pair[1], x)
    return getattr(nniq, name).from_float(ours_f), getattr(up_nniq, name).from_float(theirs_f), x


def _engine_cases():
    for case_id, name, make, shape, engines in FUSED:
        for engine in engines:
            if engine in torch.backends.quantized.supported_engines:
                yield pytest.param(engine, name, make, shape, id=f"{case_id}-{engine}")


@pytest.mark.parametrize(("engine", "name", "make", "shape"), list(_engine_cases()))
def test_from_float_output_is_bit_exact_with_upstream(engine, name, make, shape):
    with quantized_engine(engine):
        ours, theirs, x = _pair(name, make, shape)
        qx = quantize_input(x)
        out = ours(qx)
        assert_same_qtensor(out, theirs(qx))
        if name in ("LinearReLU", "ConvReLU2d", "BNReLU2d"):
            assert int(out.int_repr().min()) >= out.q_zero_point()  # relu applied


@pytest.mark.parametrize(("name", "make", "shape"), [f[1:4] for f in FUSED], ids=[f[0] for f in FUSED])
def test_state_dict_repr_and_save_load_match_upstream(name, make, shape):
    engine = "onednn" if name in ("LinearLeakyReLU", "LinearTanh") else torch.backends.quantized.engine
    with quantized_engine(engine):
        ours, theirs, x = _pair(name, make, shape)
        qx = quantize_input(x)
        assert repr(ours) == repr(theirs)
        assert_same_state_dict(ours.state_dict(), theirs.state_dict())
        other_ours, other_theirs, _ = _pair(name, make, shape)
        other_theirs.load_state_dict(ours.state_dict())
        assert_same_qtensor(other_theirs(qx), theirs(qx))
        other_ours.load_state_dict(save_load(theirs.state_dict(), weights_only=True))
        assert_same_qtensor(other_ours(qx), ours(qx))
        assert_same_qtensor(save_load(ours, weights_only=False)(qx), ours(qx))


@pytest.mark.parametrize("name", ["ConvAdd2d", "ConvAddReLU2d"])
def test_conv_add_matches_upstream(name):
    # the fused conv-add kernels exist on the onednn engine only
    with quantized_engine("onednn"):
        _check_conv_add(name)


def _check_conv_add(name):
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    x, extra = torch.randn(2, 4, 6, 6), torch.randn(2, 6, 6, 6)
    fused_ours = getattr(nni, name)(*([copy.deepcopy(conv), torch.add] + ([torch.nn.ReLU()] if "ReLU" in name else [])))
    fused_theirs = getattr(up_nni, name)(*([copy.deepcopy(conv), torch.add] + ([torch.nn.ReLU()] if "ReLU" in name else [])))
    for fused, qconfig in ((fused_ours, fxquant.default_qconfig), (fused_theirs, tq.default_qconfig)):
        fused.apply(lambda m, qc=qconfig: setattr(m, "qconfig", qc))
        fused.activation_post_process = qconfig.activation()
        fused.activation_post_process(fused(x, extra))
    ours, theirs = getattr(nniq, name).from_float(fused_ours), getattr(up_nniq, name).from_float(fused_theirs)
    qx, qextra = quantize_input(x), quantize_input(extra)
    assert_same_qtensor(ours(qx, qextra), theirs(qx, qextra))
    assert repr(ours) == repr(theirs)
    assert_same_state_dict(ours.state_dict(), theirs.state_dict())
    with pytest.raises(QuantizedInputError, match="extra_input"):
        ours(qx, extra)


def test_qat_conv_bn_relu_converts_like_upstream():
    import torch.ao.nn.intrinsic.qat as up_nniqat

    qconfig = tq.get_default_qat_qconfig("x86")
    fused = up_nni.ConvBnReLU2d(torch.nn.Conv2d(4, 6, 3), _bn(torch.nn.BatchNorm2d, 6), torch.nn.ReLU())
    fused.qconfig = qconfig
    qat = up_nniqat.ConvBnReLU2d.from_float(fused)
    qat.activation_post_process = qconfig.activation()
    x = torch.randn(2, 4, 7, 7)
    qat.activation_post_process(qat(x))
    qat.eval()
    ours = nniq.ConvReLU2d.from_float(copy.deepcopy(qat))
    theirs = up_nniq.ConvReLU2d.from_float(copy.deepcopy(qat))
    qx = quantize_input(x)
    assert_same_qtensor(ours(qx), theirs(qx))


def test_from_reference_of_fused_reference_modules():
    import torch.ao.nn.quantized.reference as up_ref
    from torch.ao.quantization.utils import get_qparam_dict

    linear, conv = torch.nn.Linear(12, 8), torch.nn.Conv2d(4, 6, 3)
    refs = []
    for float_mod, ref_cls in ((linear, up_ref.Linear), (conv, up_ref.Conv2d)):
        observer = tq.default_per_channel_weight_observer()
        observer(float_mod.weight)
        refs.append(ref_cls.from_float(float_mod, get_qparam_dict(observer)))
    ref_linear_relu = torch.nn.Sequential(refs[0], torch.nn.ReLU())
    ref_conv_relu = torch.nn.Sequential(refs[1], torch.nn.ReLU())
    qx_linear, qx_conv = quantize_input(torch.randn(3, 12)), quantize_input(torch.randn(1, 4, 6, 6))
    assert_same_qtensor(nniq.LinearReLU.from_reference(ref_linear_relu, 0.05, 0)(qx_linear),
                        up_nniq.LinearReLU.from_reference(ref_linear_relu, 0.05, 0)(qx_linear))
    assert_same_qtensor(nniq.ConvReLU2d.from_reference(ref_conv_relu, 0.05, 0)(qx_conv),
                        up_nniq.ConvReLU2d.from_reference(ref_conv_relu, 0.05, 0)(qx_conv))


def test_from_float_checks_the_fused_type():
    x = torch.randn(2, 12)
    plain = observe(torch.nn.Linear(12, 8), fxquant.default_qconfig, x)
    with pytest.raises(FromFloatError, match="LinearReLU"):
        nniq.LinearReLU.from_float(plain)


def test_float_input_raises_clear_error():
    with pytest.raises(QuantizedInputError, match="QuantizedLinearReLU.*QuantStub"):
        nniq.LinearReLU(3, 2)(torch.randn(1, 3))
    with pytest.raises(QuantizedInputError, match="QuantizedConvReLU2d"):
        nniq.ConvReLU2d(3, 2, 1)(torch.randn(1, 3, 2, 2))
