"""The module mappings name the same classes as upstream's, one for one."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantization_mappings as upstream_mappings
import torch.nn.functional as F
from torch import nn

import fxquant.eager as fe
from fxquant.eager import NoQuantizedModuleError

# Public packages whose classes appear in the mappings: upstream path -> our path.
PACKAGES = {
    "torch.ao.nn.quantized": "fxquant.nn.quantized",
    "torch.ao.nn.quantized.dynamic": "fxquant.nn.quantized.dynamic",
    "torch.ao.nn.quantized.reference": "fxquant.nn.quantized.reference",
    "torch.ao.nn.qat": "fxquant.nn.qat",
    "torch.ao.nn.qat.dynamic": "fxquant.nn.qat.dynamic",
    "torch.ao.nn.intrinsic": "fxquant.nn.intrinsic",
    "torch.ao.nn.intrinsic.qat": "fxquant.nn.intrinsic.qat",
    "torch.ao.nn.intrinsic.quantized": "fxquant.nn.intrinsic.quantized",
    "torch.ao.nn.intrinsic.quantized.dynamic": "fxquant.nn.intrinsic.quantized.dynamic",
    "torch.ao.nn.quantizable": "fxquant.nn.quantizable",
    "torch.ao.quantization.stubs": "fxquant.eager.stubs",
}


def _canonical_names(side: int) -> dict[type, str]:
    """class -> "<upstream package>.<ClassName>" for every class those packages export."""
    names: dict[type, str] = {}
    # Deeper packages first, so a class re-exported by a parent keeps its own package's name.
    for upstream, ours in sorted(PACKAGES.items(), key=lambda kv: -kv[0].count(".")):
        package = importlib.import_module((upstream, ours)[side])
        for attr in dir(package):
            value = getattr(package, attr)
            if isinstance(value, type):
                names.setdefault(value, f"{upstream}.{attr}")
    return names


def _canonical(table, side):
    names = _canonical_names(side)

    def name(cls):
        if cls.__module__.startswith("torch.nn"):
            return f"{cls.__module__}.{cls.__qualname__}"
        return names[cls]

    if isinstance(table, dict):
        return {name(k): name(v) for k, v in table.items()}
    return {name(c) for c in table}


GETTERS = [
    "get_default_static_quant_module_mappings",
    "get_default_static_quant_reference_module_mappings",
    "get_embedding_static_quant_module_mappings",
    "get_default_qat_module_mappings",
    "get_embedding_qat_module_mappings",
    "get_default_dynamic_quant_module_mappings",
    "get_default_qconfig_propagation_list",
    "get_default_compare_output_module_list",
]
# Upstream entries fxquant does not have (yet), with the reason.
KNOWN_GAPS: dict[str, set[str]] = {}


@pytest.mark.parametrize("getter", GETTERS, ids=GETTERS)
def test_mapping_names_the_same_classes_as_upstream(getter):
    ours = _canonical(getattr(fe, getter)(), side=1)
    theirs = _canonical(getattr(tq, getter)(), side=0)
    gaps = KNOWN_GAPS.get(getter, set())
    if isinstance(theirs, dict):
        theirs = {k: v for k, v in theirs.items() if k not in gaps}
    else:
        theirs = theirs - gaps
    assert ours == theirs


@pytest.mark.parametrize("getter", ["get_default_static_quant_module_mappings",
                                    "get_default_dynamic_quant_module_mappings"])
def test_getters_return_fresh_copies(getter):
    mapping = getattr(fe, getter)()
    mapping[nn.GELU] = nn.Identity
    assert nn.GELU not in getattr(fe, getter)()


def test_no_observer_set_is_the_quantizable_lstm():
    import fxquant.nn.quantizable as nnqa

    assert nnqa.LSTM in fe.no_observer_set()


@pytest.mark.parametrize(
    "float_class, is_reference, expected",
    [(nn.Conv2d, False, "torch.ao.nn.quantized.Conv2d"),
     (nn.Linear, True, "torch.ao.nn.quantized.reference.Linear")],
    ids=["static", "reference"],
)
def test_get_static_quant_module_class(float_class, is_reference, expected):
    cls = fe.get_static_quant_module_class(float_class, is_reference=is_reference)
    assert _canonical_names(1)[cls] == expected
    assert fe.get_static_quant_module_class(nn.GELU, {nn.GELU: nn.Identity}) is nn.Identity


def test_get_dynamic_quant_module_class():
    cls = fe.get_dynamic_quant_module_class(nn.LSTM)
    assert _canonical_names(1)[cls] == "torch.ao.nn.quantized.dynamic.LSTM"


@pytest.mark.parametrize(
    "lookup",
    [lambda: fe.get_static_quant_module_class(nn.GELU),
     lambda: fe.get_dynamic_quant_module_class(nn.Conv2d),
     lambda: fe.get_quantized_operator(F.gelu)],
    ids=["static", "dynamic", "operator"],
)
def test_missing_counterpart_raises_named_error(lookup):
    with pytest.raises(NoQuantizedModuleError, match="GELU|Conv2d|gelu"):
        lookup()
    with pytest.raises(AssertionError):  # upstream's exception type still catches it
        lookup()


def test_operator_mappings_match_upstream():
    assert fe.get_default_float_to_quantized_operator_mappings() == (
        tq.get_default_float_to_quantized_operator_mappings()
    )
    assert fe.get_quantized_operator(F.elu) is torch.ops.quantized.elu


def test_special_activation_post_processes_match_upstream():
    from fxquant.eager import mappings

    for module in (nn.Sigmoid(), nn.Softmax(), nn.Hardsigmoid(), nn.Tanh()):
        ours = mappings._get_special_act_post_process(module)()
        theirs = upstream_mappings._get_special_act_post_process(module)()
        assert type(ours).__name__ == type(theirs).__name__
        assert ours.scale == theirs.scale and ours.zero_point == theirs.zero_point


def test_sparse_mappings_are_empty():
    assert fe.get_default_static_sparse_quant_module_mappings() == {}
    assert fe.get_default_dynamic_sparse_quant_module_mappings() == {}


def test_get_combined_dict():
    assert fe.get_combined_dict({"a": 1, "b": 1}, {"b": 2, "c": 3}) == {"a": 1, "b": 2, "c": 3}


def test_default_custom_config_dict_swaps_lstm():
    import fxquant.nn.quantizable as nnqa

    config = fe.get_default_custom_config_dict()
    assert config["float_to_observed_custom_module_class"][nn.LSTM] is nnqa.LSTM
    assert nnqa.LSTM in config["observed_to_quantized_custom_module_class"]
