"""The custom configs round-trip upstream's dict format and reject unknown keys."""

from __future__ import annotations

import pytest
import torch.ao.quantization.fx.custom_config as upstream_cc
from torch import nn

import fxquant
from fxquant.fx import ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig


def test_prepare_config_round_trips_upstreams_dict():
    upstream = (upstream_cc.PrepareCustomConfig()
                .set_non_traceable_module_names(["a"])
                .set_non_traceable_module_classes([nn.LSTM])
                .set_input_quantized_indexes([0])
                .set_output_quantized_indexes([1])
                .set_preserved_attributes(["v"]))
    ours = PrepareCustomConfig.from_dict(upstream.to_dict())
    assert ours.to_dict() == upstream.to_dict()
    assert ours.non_traceable_module_classes == [nn.LSTM]


def test_convert_and_fuse_configs_round_trip():
    up_convert = upstream_cc.ConvertCustomConfig().set_preserved_attributes(["x"])
    assert ConvertCustomConfig.from_dict(up_convert.to_dict()).to_dict() == up_convert.to_dict()
    up_fuse = upstream_cc.FuseCustomConfig().set_preserved_attributes(["y"])
    assert FuseCustomConfig.from_dict(up_fuse.to_dict()).to_dict() == up_fuse.to_dict()


@pytest.mark.parametrize("cls", [PrepareCustomConfig, ConvertCustomConfig, FuseCustomConfig],
                         ids=lambda c: c.__name__)
def test_unknown_key_is_rejected(cls):
    with pytest.raises(ValueError, match="unknown keys"):
        cls.from_dict({"preserved_atributes": ["v"]})


def test_standalone_and_custom_module_entries_round_trip_upstreams_dict():
    import torch.ao.nn.quantizable as up_nnqa
    import torch.ao.quantization as tq

    upstream = (upstream_cc.PrepareCustomConfig()
                .set_standalone_module_name("a", None, (1,), None, None)
                .set_standalone_module_class(nn.Linear, tq.QConfigMapping(), (),
                                             upstream_cc.PrepareCustomConfig().set_input_quantized_indexes([0]), None)
                .set_float_to_observed_mapping(nn.LSTM, up_nnqa.LSTM))
    ours = PrepareCustomConfig.from_dict(upstream.to_dict())
    assert ours.to_dict() == upstream.to_dict()
    mapping, _example_inputs, custom, _backend_config = ours.standalone_module_classes[nn.Linear]
    assert isinstance(mapping, fxquant.QConfigMapping) and custom.input_quantized_indexes == [0]
    assert ours.float_to_observed_mapping == {"static": {nn.LSTM: up_nnqa.LSTM}}


def test_custom_module_quant_type_accepts_quant_type_enum_and_rejects_unknown_names():
    from fxquant.eager.quant_type import QuantType

    config = PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, nn.Module, QuantType.STATIC)
    assert list(config.float_to_observed_mapping) == ["static"]
    with pytest.raises(ValueError, match=r"'statik'.*static"):
        ConvertCustomConfig().set_observed_to_quantized_mapping(nn.Module, nn.Module, "statik")


def _prepare(config):
    import torch

    from fxquant.quantize_fx import prepare_fx

    model = nn.Sequential(nn.Linear(4, 4)).eval()
    return prepare_fx(model, fxquant.get_default_qconfig_mapping("x86"), (torch.randn(2, 4),), config)


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        (PrepareCustomConfig().set_non_traceable_module_names(["decoder"]),
         r"set_non_traceable_module_names.*\['decoder'\].*named_modules"),
        (PrepareCustomConfig().set_standalone_module_name("blok", None, None, None, None),
         r"set_standalone_module_name.*\['blok'\].*named_modules"),
        (PrepareCustomConfig().set_input_quantized_indexes([1]), r"input_quantized_indexes \[1\].*1 example inputs"),
        (PrepareCustomConfig().set_output_quantized_indexes([-1]), r"output_quantized_indexes \[-1\].*0-based"),
    ],
    ids=["non-traceable-name", "standalone-name", "input-index", "output-index"],
)
def test_prepare_custom_config_that_matches_nothing_is_a_clear_error(config, pattern):
    with pytest.raises(ValueError, match=pattern):
        _prepare(config)
