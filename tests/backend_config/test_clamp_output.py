"""observe_after_clamp: (conv/linear root, ReLU6/hardtanh) patterns observed at the clamp."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from fxquant.backend_config import (
    ObservationType,
    get_native_backend_config,
    get_onednn_backend_config,
    get_qnnpack_backend_config,
    get_x86_backend_config,
    observe_after_clamp,
)
from fxquant.backend_config.clamp_output import CLAMP_OPS, CLAMPABLE_ROOTS

GETTERS = {"native": get_native_backend_config, "x86": get_x86_backend_config,
           "qnnpack": get_qnnpack_backend_config, "onednn": get_onednn_backend_config}


@pytest.mark.parametrize("name", list(GETTERS))
def test_every_root_gets_every_clamp_with_the_roots_dtype_configs(name):
    plain = GETTERS[name](upstream_compatible=True)
    extended = GETTERS[name]()
    table = extended._pattern_complex_format_to_config
    roots = [c for c in plain.configs if c.pattern in CLAMPABLE_ROOTS]
    assert roots
    for root in roots:
        for clamp in CLAMP_OPS:
            config = table[(clamp, root.pattern)]
            assert config.observation_type is ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
            assert config.dtype_configs == root.dtype_configs
    assert len(extended.configs) == len(plain.configs) + len(roots) * len(CLAMP_OPS)
    # upstream's own patterns keep their order, the new ones come after them
    assert [c.pattern for c in extended.configs[:len(plain.configs)]] == [c.pattern for c in plain.configs]


def test_functional_roots_keep_their_weight_and_bias_indexes():
    table = get_native_backend_config()._pattern_complex_format_to_config
    assert table[(F.relu6, F.conv2d)]._input_type_to_index == {"weight": 1, "bias": 2}


def test_adding_twice_changes_nothing_and_the_input_is_left_alone():
    plain = get_x86_backend_config(upstream_compatible=True)
    before = len(plain.configs)
    once = observe_after_clamp(plain)
    assert len(plain.configs) == before
    assert [c.pattern for c in observe_after_clamp(once).configs] == [c.pattern for c in once.configs]
    assert (nn.ReLU6, nn.Linear) in once._pattern_complex_format_to_config
