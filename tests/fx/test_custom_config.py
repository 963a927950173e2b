"""The custom configs round-trip upstream's dict format and reject unknown keys."""

from __future__ import annotations

import pytest
import torch.ao.quantization.fx.custom_config as upstream_cc
from torch import nn

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
