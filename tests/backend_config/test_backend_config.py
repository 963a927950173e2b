"""The config classes: validation, builder semantics, dict round trips, repr."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
import torch.ao.quantization.backend_config as upstream_bc
from backend_config.oracle_compare import dtype_config_key, pattern_config_key
from torch import nn

import fxquant.nn.intrinsic as nni
from fxquant.backend_config import (
    BackendConfig,
    BackendPatternConfig,
    DTypeConfig,
    DTypeWithConstraints,
    ObservationType,
)

INT8_WEIGHTED = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8,
                            weight_dtype=torch.qint8, bias_dtype=torch.float)
SYMMETRIC = DTypeWithConstraints(dtype=torch.qint8, quant_min_lower_bound=-127,
                                 quant_max_upper_bound=127, scale_min_lower_bound=2**-12)


# --- DTypeWithConstraints / DTypeConfig -------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"dtype": "int8"}, TypeError, "torch.dtype"),
    ({"dtype": torch.qint8, "quant_min_lower_bound": 10, "quant_max_upper_bound": 0},
     ValueError, "quant_min_lower_bound (10) is above quant_max_upper_bound (0)"),
    ({"dtype": torch.qint8, "scale_min_lower_bound": 1.0, "scale_max_upper_bound": 0.5},
     ValueError, "scale_min_lower_bound"),
    ({"dtype": torch.quint8, "scale_exact_match": 0.0}, ValueError, "must be positive"),
], ids=["dtype-not-a-dtype", "quant-bounds-crossed", "scale-bounds-crossed", "zero-scale"])
def test_dtype_with_constraints_rejects_contradictions(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        DTypeWithConstraints(**kwargs)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"input_dtype": "quint8"}, "input_dtype"),
    ({"weight_dtype": 8}, "weight_dtype"),
    ({"bias_dtype": SYMMETRIC}, "bias_dtype"),
    ({"is_dynamic": "yes"}, "is_dynamic"),
], ids=["input-str", "weight-int", "bias-constraints", "is-dynamic-str"])
def test_dtype_config_rejects_wrong_types(kwargs, words):
    with pytest.raises(TypeError, match=words):
        DTypeConfig(**kwargs)


def test_dtype_config_is_a_frozen_value_with_upstream_accessors():
    config = DTypeConfig(input_dtype=SYMMETRIC, output_dtype=torch.quint8, is_dynamic=False)
    assert config.input_dtype is torch.qint8 and config.input_dtype_with_constraints is SYMMETRIC
    assert config.output_dtype_with_constraints == DTypeWithConstraints(dtype=torch.quint8)
    assert config.weight_dtype is None
    assert config == DTypeConfig(input_dtype=SYMMETRIC, output_dtype=torch.quint8,
                                 is_dynamic=False)
    assert hash(config) == hash(DTypeConfig(SYMMETRIC, torch.quint8, is_dynamic=False))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bias_dtype = torch.float  # type: ignore[misc]


@pytest.mark.parametrize("config", [
    INT8_WEIGHTED, DTypeConfig(),
    DTypeConfig(input_dtype=SYMMETRIC, output_dtype=torch.float, weight_dtype=SYMMETRIC,
                bias_dtype=torch.float, is_dynamic=True),
], ids=["int8-weighted", "empty", "constrained-dynamic"])
def test_dtype_config_dict_round_trip_and_same_dict_as_upstream(config):
    as_dict = config.to_dict()
    assert DTypeConfig.from_dict(as_dict) == config
    upstream = upstream_bc.DTypeConfig(
        config.input_dtype, config.output_dtype, config.weight_dtype, config.bias_dtype,
        config.is_dynamic)
    assert sorted(as_dict) == sorted(upstream.to_dict())


def test_dtype_config_repr_names_only_what_is_set():
    assert repr(INT8_WEIGHTED) == ("DTypeConfig(input_dtype=torch.quint8, output_dtype=torch."
                                   "quint8, weight_dtype=torch.qint8, bias_dtype=torch.float32)")
    assert repr(DTypeConfig(input_dtype=SYMMETRIC)) == (
        "DTypeConfig(input_dtype=DTypeWithConstraints(dtype=torch.qint8, quant_min_lower_bound="
        "-127, quant_max_upper_bound=127, scale_min_lower_bound=0.000244140625))")


# --- BackendPatternConfig ----------------------------------------------------------------------

def _linear_config() -> BackendPatternConfig:
    return (BackendPatternConfig(nn.Linear)
            .set_observation_type(ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT)
            .add_dtype_config(INT8_WEIGHTED)
            .set_root_module(nn.Linear))


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda c: c.set_observation_type(0), TypeError, "ObservationType"),
    (lambda c: c.add_dtype_config({"input_dtype": torch.quint8}), TypeError, "DTypeConfig"),
    (lambda c: c.set_root_module(nn.Linear(2, 2)), TypeError, "nn.Module subclass"),
    (lambda c: c.set_fuser_method("fuse"), TypeError, "callable"),
    (lambda c: c._set_pattern_complex_format((nn.ReLU, nn.Linear)), ValueError, "not both"),
    (lambda c: BackendPatternConfig((nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU)), ValueError,
     "2 or 3 elements"),
], ids=["observation-type-int", "dtype-config-dict", "module-instance", "fuser-str",
        "both-pattern-formats", "four-long-tuple"])
def test_pattern_config_rejects_misuse(call, error, words):
    with pytest.raises(error, match=words):
        call(_linear_config())


def test_pattern_config_setters_chain_and_replace():
    config = _linear_config().set_dtype_configs([INT8_WEIGHTED, DTypeConfig()])
    assert config.dtype_configs == [INT8_WEIGHTED, DTypeConfig()]
    assert config.pattern is nn.Linear and config.root_module is nn.Linear


def test_pattern_config_repr_lists_set_fields_only():
    text = repr(_linear_config())
    assert text.startswith("BackendPatternConfig(pattern=<class 'torch.nn.modules.linear.Linear'>")
    assert "dtype_configs=[DTypeConfig(input_dtype=torch.quint8" in text
    assert "qat_module" not in text and "input_type_to_index" not in text


def test_pattern_config_dict_round_trip_with_private_fields():
    config = (BackendPatternConfig()._set_pattern_complex_format((nn.ReLU, (torch.add, nn.Conv2d)))
              .set_dtype_configs([INT8_WEIGHTED]).set_fused_module(nni.ConvAddReLU2d)
              ._set_input_type_to_index({"weight": 1})
              ._set_num_tensor_args_to_observation_type(
                  {1: ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT}))
    as_dict = config.to_dict()
    assert "pattern" not in as_dict and "pattern_complex_format" in as_dict
    assert pattern_config_key(BackendPatternConfig.from_dict(as_dict)) == pattern_config_key(config)


# --- BackendConfig -----------------------------------------------------------------------------

def test_backend_config_keys_configs_by_pattern_in_either_format():
    first = _linear_config()
    relu = BackendPatternConfig((nn.Linear, nn.ReLU)).add_dtype_config(INT8_WEIGHTED)
    same_relu = BackendPatternConfig()._set_pattern_complex_format((nn.ReLU, nn.Linear))
    replacement = BackendPatternConfig(nn.Linear)
    config = BackendConfig("mine").set_backend_pattern_configs([first, relu, same_relu,
                                                                replacement])
    assert config.configs == [replacement, same_relu]  # replaced in place, order kept
    assert list(config._pattern_complex_format_to_config) == [nn.Linear, (nn.ReLU, nn.Linear)]
    config.configs.clear()  # a copy
    assert len(config.configs) == 2


def test_backend_config_rejects_configs_without_pattern_and_bad_entries():
    with pytest.raises(ValueError, match="no pattern"):
        BackendConfig().set_backend_pattern_config(BackendPatternConfig())
    with pytest.raises(TypeError, match="BackendPatternConfig"):
        BackendConfig().set_backend_pattern_config(nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="configs"):
        BackendConfig.from_dict({"name": "x", "configs": [nn.Linear]})


BACKENDS = ["native", "x86", "fbgemm", "qnnpack", "onednn", "executorch", "tensorrt"]


@pytest.mark.parametrize("name", BACKENDS, ids=BACKENDS)
def test_ready_config_dict_round_trip(name):
    config = getattr(importlib.import_module(f"fxquant.backend_config.{name}"),
                     f"get_{name}_backend_config")()
    rebuilt = BackendConfig.from_dict(config.to_dict())
    assert rebuilt.name == config.name
    assert [pattern_config_key(c) for c in rebuilt.configs] == \
        [pattern_config_key(c) for c in config.configs]
    assert [c.fuser_method for c in rebuilt.configs] == [c.fuser_method for c in config.configs]
    assert repr(config) == f"BackendConfig(name={name!r}, configs=<{len(config.configs)} patterns>)"


def test_ready_configs_are_fresh_objects():
    from fxquant.backend_config import get_native_backend_config

    a, b = get_native_backend_config(), get_native_backend_config()
    a.set_backend_pattern_config(BackendPatternConfig(nn.Bilinear))
    assert len(a.configs) == len(b.configs) + 1
    assert all(dtype_config_key(d) == dtype_config_key(e)
               for c, k in zip(a.configs, b.configs) for d, e in zip(c.dtype_configs,
                                                                     k.dtype_configs))
