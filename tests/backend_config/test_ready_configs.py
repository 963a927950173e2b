"""Every ready config says the same as upstream's config of the same name."""

from __future__ import annotations

import importlib

import pytest
import torch.ao.quantization.backend_config as upstream_bc
from backend_config.oracle_compare import dtype_config_key, pattern_config_key, translate

import fxquant.backend_config as bc
from fxquant.backend_config import utils

CLAMP_DEFAULT = {"native", "x86", "fbgemm", "qnnpack", "onednn"}
BACKENDS = ["native", "x86", "fbgemm", "qnnpack", "onednn", "executorch", "tensorrt",
            "test_only_legacy_native"]


def _pair(name: str):
    module = {"test_only_legacy_native": "native"}.get(name, name)
    getter = f"get_{name}_backend_config"
    upstream = getattr(importlib.import_module(
        f"torch.ao.quantization.backend_config.{module}"), getter)()
    ours_getter = getattr(importlib.import_module(f"fxquant.backend_config.{module}"), getter)
    # the configs that add fxquant's clamp patterns by default give upstream's on request
    ours = ours_getter(upstream_compatible=True) if name in CLAMP_DEFAULT else ours_getter()
    return upstream, ours


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def configs(request):
    return _pair(request.param)


def test_same_name_and_number_of_patterns(configs):
    upstream, ours = configs
    assert ours.name == upstream.name
    assert len(ours.configs) == len(upstream.configs)


def test_same_patterns_in_the_same_order(configs):
    upstream, ours = configs
    assert [translate(p) for p in upstream._pattern_complex_format_to_config] == \
        list(ours._pattern_complex_format_to_config)


def test_every_pattern_config_matches(configs):
    upstream, ours = configs
    for up, our in zip(upstream.configs, ours.configs, strict=True):
        assert pattern_config_key(our) == pattern_config_key(up), up.pattern


def test_dtype_configs_per_pattern_match(configs):
    upstream, ours = configs
    up_map = upstream_bc.utils.get_pattern_to_dtype_configs(upstream)
    our_map = utils.get_pattern_to_dtype_configs(ours)
    assert {translate(p): [dtype_config_key(d) for d in v] for p, v in up_map.items()} == \
        {p: [dtype_config_key(d) for d in v] for p, v in our_map.items()}


def test_fused_qat_and_reference_module_mappings_match(configs):
    upstream, ours = configs
    u = upstream_bc.utils
    assert set(utils.get_fused_module_classes(ours)) == \
        {translate(c) for c in u.get_fused_module_classes(upstream)}
    assert set(utils.get_qat_module_classes(ours)) == \
        {translate(c) for c in u.get_qat_module_classes(upstream)}
    assert utils.get_module_to_qat_module(ours) == {
        translate(p): translate(m) for p, m in u.get_module_to_qat_module(upstream).items()}
    assert utils.get_root_module_to_quantized_reference_module(ours) == {
        translate(r): translate(m)
        for r, m in u.get_root_module_to_quantized_reference_module(upstream).items()}


def test_lookup_tables_cover_the_same_patterns(configs):
    upstream, ours = configs
    u = upstream_bc.utils
    for ours_fn, up_fn in [
        (utils.get_fuser_method_mapping, u.get_fuser_method_mapping),
        (utils.get_fusion_pattern_to_root_node_getter, u.get_fusion_pattern_to_root_node_getter),
        (utils.get_fusion_pattern_to_extra_inputs_getter,
         u.get_fusion_pattern_to_extra_inputs_getter),
    ]:
        assert list(ours_fn(ours)) == [translate(p) for p in up_fn(upstream)]
    assert utils.get_pattern_to_input_type_to_index(ours) == {
        translate(p): v for p, v in u.get_pattern_to_input_type_to_index(upstream).items()}


def test_dict_form_has_the_same_keys_per_entry(configs):
    upstream, ours = configs
    up_dict, our_dict = upstream.to_dict(), ours.to_dict()
    assert our_dict["name"] == up_dict["name"]
    assert [sorted(e) for e in our_dict["configs"]] == [sorted(e) for e in up_dict["configs"]]


def test_root_exports_the_native_dict():
    assert bc.get_native_backend_config_dict()["name"] == "native"
    assert len(bc.get_native_backend_config_dict(upstream_compatible=True)["configs"]) == \
        len(upstream_bc.get_native_backend_config_dict()["configs"])
