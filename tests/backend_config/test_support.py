"""``dtype_config_supports`` & co.: a truth table with reasons, and agreement with the
checks upstream's FX prepare makes (same qconfig x dtype config -> same verdict)."""

from __future__ import annotations

import importlib
import inspect
import warnings

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.backend_config as upstream_bc
from backend_config.oracle_compare import dtype_config_key
from torch import nn
from torch.ao.quantization.fx.utils import _qconfig_satisfies_dtype_config_constraints

import fxquant.qconfig as fq
from fxquant.backend_config import (
    QConfigSupport,
    backend_supports_qconfig,
    dtype_config_supports,
    dtype_configs_support,
    get_executorch_backend_config,
    get_native_backend_config,
    get_qnnpack_backend_config,
)
from fxquant.backend_config.native import (
    default_dynamic_int8_dtype_config,
    default_op_quint8_dtype_config,
    get_test_only_legacy_native_backend_config,
    weighted_op_quint8_dtype_config,
)
from fxquant.fake_quantize import FixedQParamsFakeQuantize
from fxquant.observers import (
    FixedQParamsObserver,
    HistogramObserver,
    MinMaxObserver,
    default_weight_observer,
)

_prepare = importlib.import_module("torch.ao.quantization.fx.prepare")


def _fixed(scale: float, zero_point: int, *, fake: bool = False, ours: bool = True):
    observer_cls = FixedQParamsObserver if ours else tq.FixedQParamsObserver
    observer = observer_cls.with_args(scale=scale, zero_point=zero_point, dtype=torch.quint8,
                                      quant_min=0, quant_max=255)
    if fake:
        fq_cls = FixedQParamsFakeQuantize if ours else tq.FixedQParamsFakeQuantize
        observer = fq_cls.with_args(observer=observer)
    weight = default_weight_observer if ours else tq.default_weight_observer
    return (fq.QConfig if ours else tq.QConfig)(activation=observer, weight=weight)


SIGMOID_QCONFIG = _fixed(1 / 256, 0)
TANH_QCONFIG = _fixed(2 / 256, 128)
QINT8_SMALL_EPS = fq.QConfig(  # symmetric qint8 but eps left at its default (~1.2e-7)
    activation=HistogramObserver.with_args(dtype=torch.qint8, reduce_range=False),
    weight=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                    eps=2**-12))
QINT8_FULL_RANGE_WEIGHT = fq.QConfig(  # weight in [-128, 127], backend wants [-127, 127]
    activation=HistogramObserver.with_args(dtype=torch.qint8, eps=2**-12, reduce_range=False),
    weight=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                    eps=2**-12))

# (backend getter, pattern, qconfig, supported, words the reason must contain)
TRUTH_TABLE = [
    ("native-linear-static", get_native_backend_config, nn.Linear, fq.default_qconfig, True, ""),
    ("native-linear-dynamic", get_native_backend_config, nn.Linear, fq.default_dynamic_qconfig,
     True, ""),
    ("native-linear-fp16-dynamic", get_native_backend_config, nn.Linear,
     fq.float16_dynamic_qconfig, True, ""),
    ("native-linear-fp16-static", get_native_backend_config, nn.Linear,
     fq.float16_static_qconfig, False, "torch.float16"),
    ("legacy-native-linear-fp16-static", get_test_only_legacy_native_backend_config, nn.Linear,
     fq.float16_static_qconfig, True, ""),
    ("native-conv-dynamic", get_native_backend_config, nn.Conv2d, fq.default_dynamic_qconfig,
     False, "dynamic"),
    ("native-sigmoid-minmax", get_native_backend_config, nn.Sigmoid, fq.default_qconfig, False,
     "FixedQParamsObserver"),
    ("native-sigmoid-fixed", get_native_backend_config, nn.Sigmoid, SIGMOID_QCONFIG, True, ""),
    ("native-sigmoid-fixed-fake-quant", get_native_backend_config, torch.sigmoid,
     _fixed(1 / 256, 0, fake=True), True, ""),
    ("native-sigmoid-tanh-qparams", get_native_backend_config, nn.Sigmoid, TANH_QCONFIG, False,
     "differ"),
    ("native-tanh-fixed", get_native_backend_config, "tanh", TANH_QCONFIG, True, ""),
    ("native-embedding-weight-only", get_native_backend_config, nn.Embedding,
     fq.float_qparams_weight_only_qconfig, True, ""),
    ("native-embedding-static", get_native_backend_config, nn.Embedding, fq.default_qconfig,
     False, "dtype"),
    ("native-no-such-pattern", get_native_backend_config, nn.Bilinear, fq.default_qconfig,
     False, "no config"),
    ("native-conv-relu-forward-order", get_native_backend_config, (nn.Conv2d, nn.ReLU),
     fq.default_qconfig, True, ""),
    ("native-linear-identity-activation", get_native_backend_config, nn.Linear,
     fq.default_weight_only_qconfig, False, "input activation dtype is None"),
    ("native-none-qconfig", get_native_backend_config, nn.Linear, None, True, ""),
    ("qnnpack-conv-symmetric", get_qnnpack_backend_config, nn.Conv2d,
     fq.default_symmetric_qnnpack_qconfig, True, ""),
    ("qnnpack-conv-small-eps", get_qnnpack_backend_config, nn.Conv2d, QINT8_SMALL_EPS, False,
     "eps"),
    ("qnnpack-conv-full-range-weight", get_qnnpack_backend_config, nn.Conv2d,
     QINT8_FULL_RANGE_WEIGHT, False, "[-128, 127]"),
    ("executorch-linear-dynamic-qint8", get_executorch_backend_config, nn.Linear,
     fq.QConfig(activation=fq.default_dynamic_qconfig.activation.with_args(
         dtype=torch.qint8, eps=2**-12), weight=fq.default_symmetric_qnnpack_qconfig.weight),
     True, ""),
]


@pytest.mark.parametrize(("getter", "pattern", "qconfig", "supported", "words"),
                         [row[1:] for row in TRUTH_TABLE], ids=[row[0] for row in TRUTH_TABLE])
def test_truth_table(getter, pattern, qconfig, supported, words):
    result = backend_supports_qconfig(getter(), pattern, qconfig)
    assert result.supported is supported, result.reason
    assert bool(result) is supported
    if supported:
        assert result.reason == ""
    else:
        assert words in result.reason
        assert repr(getter().name) in result.reason  # names the backend ...
        assert result.reason.startswith("(") or "." in result.reason.split(" on ")[0]  # ... and op


def test_result_unpacks_as_supported_and_reason():
    ok, reason = dtype_config_supports(default_dynamic_int8_dtype_config, fq.default_qconfig)
    assert ok is False
    assert reason == "the qconfig is static but this backend dtype config is dynamic"
    assert isinstance(dtype_config_supports(default_op_quint8_dtype_config, None), QConfigSupport)


@pytest.mark.parametrize(("check_weight", "supported"), [(True, False), (False, True)],
                         ids=["weight-checked", "weight-not-checked"])
def test_weight_is_checked_only_when_asked(check_weight, supported):
    activation_only = fq.QConfig(activation=fq.default_qconfig.activation,
                                 weight=fq.float16_static_qconfig.weight)
    result = dtype_config_supports(weighted_op_quint8_dtype_config, activation_only,
                                   check_weight=check_weight)
    assert result.supported is supported
    if not supported:
        assert "weight dtype is torch.float16" in result.reason


def test_reason_lists_every_rejecting_dtype_config():
    result = dtype_configs_support(
        [weighted_op_quint8_dtype_config, default_dynamic_int8_dtype_config],
        fq.float16_static_qconfig)
    assert not result
    assert "[dtype config 0]" in result.reason and "[dtype config 1]" in result.reason
    assert not dtype_configs_support([], fq.default_qconfig)


# --- agreement with upstream's prepare-time checks -------------------------------------------

def _upstream_supports(qconfig, dc) -> bool:
    """Upstream's verdict for an op with an activation input, weight and bias, following
    ``fx/prepare.py`` (input arg, weight arg, bias arg, output checks)."""
    act = qconfig.activation()
    act_dtype, act_dynamic = _prepare._get_dtype_and_is_dynamic(act)
    weight_dtype, _ = _prepare._get_dtype_and_is_dynamic(qconfig.weight())
    input_ok = dc.input_dtype is None or (
        dc.input_dtype == act_dtype and bool(dc.is_dynamic) == bool(act_dynamic)
        and _qconfig_satisfies_dtype_config_constraints(qconfig, dc.input_dtype_with_constraints))
    weight_ok = dc.weight_dtype is None or (
        weight_dtype == dc.weight_dtype and _qconfig_satisfies_dtype_config_constraints(
            qconfig, dc.weight_dtype_with_constraints, is_activation=False))
    fp16 = act_dtype == torch.float16 and weight_dtype == torch.float16 and not act_dynamic
    bias_ok = dc.bias_dtype is None or dc.bias_dtype == (torch.float16 if fp16 else torch.float)
    out_dtype = torch.float32 if act_dynamic else act_dtype
    output_ok = dc.output_dtype is None or (
        out_dtype == dc.output_dtype and _qconfig_satisfies_dtype_config_constraints(
            qconfig, dc.output_dtype_with_constraints))
    return input_ok and weight_ok and bias_ok and output_ok


def _dtype_config_pairs():
    pairs = {}
    for module, getter in [("native", "get_test_only_legacy_native_backend_config"),
                           *((n, f"get_{n}_backend_config")
                             for n in ["native", "qnnpack", "onednn", "executorch", "x86"])]:
        up = getattr(importlib.import_module(f"torch.ao.quantization.backend_config.{module}"),
                     getter)()
        ours_getter = getattr(importlib.import_module(f"fxquant.backend_config.{module}"), getter)
        # fxquant's clamp patterns are extra; upstream's pattern set is asked for explicitly
        ours = ours_getter(upstream_compatible=True) if "upstream_compatible" in \
            inspect.signature(ours_getter).parameters else ours_getter()
        for up_c, our_c in zip(up.configs, ours.configs, strict=True):
            for up_dc, our_dc in zip(up_c.dtype_configs, our_c.dtype_configs, strict=True):
                pairs.setdefault(dtype_config_key(our_dc), (up_dc, our_dc))
    return list(pairs.values())


QCONFIG_NAMES = [
    "default_qconfig", "default_dynamic_qconfig", "float16_dynamic_qconfig",
    "float16_static_qconfig", "default_symmetric_qnnpack_qconfig",
    "default_per_channel_symmetric_qnnpack_qconfig", "float_qparams_weight_only_qconfig",
    "float_qparams_weight_only_qconfig_4bit", "default_qat_qconfig",
    "default_symmetric_qnnpack_qat_qconfig", "per_channel_dynamic_qconfig",
]  # (upstream's prepare cannot check qconfigs whose observer is nn.Identity)
QCONFIG_PAIRS = [(getattr(tq, n), getattr(fq, n)) for n in QCONFIG_NAMES] + [
    (_fixed(1 / 256, 0, ours=False), _fixed(1 / 256, 0)),
    (_fixed(2 / 256, 128, fake=True, ours=False), _fixed(2 / 256, 128, fake=True)),
]
QCONFIG_IDS = QCONFIG_NAMES + ["fixed-0to1-observer", "fixed-neg1to1-fake-quant"]


@pytest.mark.parametrize(("up_qconfig", "our_qconfig"), QCONFIG_PAIRS, ids=QCONFIG_IDS)
def test_same_verdict_as_upstream_for_every_backend_dtype_config(up_qconfig, our_qconfig):
    pairs = _dtype_config_pairs()
    assert len(pairs) >= 15  # the distinct dtype configs of the ready backends
    verdicts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for up_dc, our_dc in pairs:
            ours = dtype_config_supports(our_dc, our_qconfig)
            assert ours.supported == _upstream_supports(up_qconfig, up_dc), (our_dc, ours.reason)
            verdicts.append(ours.supported)
    assert True in verdicts  # every qconfig here suits some backend dtype config


# --- agreement with upstream's prepare_fx on real modules -------------------------------------

def _upstream_prepare_observes_input(module: nn.Module, qconfig, example) -> bool:
    """Whether upstream's ``prepare_fx`` on the native backend puts an observer in front of
    ``module`` (i.e. decides to quantize it)."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = prepare_fx(nn.Sequential(module).eval(), tq.QConfigMapping().set_global(qconfig),
                        (example,), backend_config=upstream_bc.get_native_backend_config())
    (node,) = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == "0"]
    arg = node.args[0]
    return arg.op == "call_module" and isinstance(gm.get_submodule(arg.target),
                                                  tq.ObserverBase)


MODULE_CASES = [(nn.Linear(4, 4), torch.randn(2, 4)), (nn.Sigmoid(), torch.randn(2, 4)),
                (nn.Conv2d(2, 2, 1), torch.randn(1, 2, 3, 3)), (nn.ReLU(), torch.randn(2, 4))]
E2E_QCONFIGS = ["default_qconfig", "default_dynamic_qconfig", "float16_static_qconfig",
                "float_qparams_weight_only_qconfig"]


@pytest.mark.parametrize("qconfig_name", E2E_QCONFIGS, ids=E2E_QCONFIGS)
@pytest.mark.parametrize(("module", "example"), MODULE_CASES,
                         ids=[type(m).__name__ for m, _ in MODULE_CASES])
def test_same_decision_as_upstream_prepare_fx(module, example, qconfig_name):
    expected = _upstream_prepare_observes_input(module, getattr(tq, qconfig_name), example)
    # a module's weight and bias are not graph inputs, so prepare checks activations only
    ours = backend_supports_qconfig(get_native_backend_config(), type(module),
                                    getattr(fq, qconfig_name), check_weight=False,
                                    check_bias=False)
    assert ours.supported == expected, ours.reason
