"""Every ready-made qconfig against upstream's: same constructors, same modules, same qparams."""

from __future__ import annotations

import pytest
import torch.ao.quantization.qconfig as upstream_qconfig
from qconfig.oracle_compare import (
    assert_same_behaviour,
    assert_same_config,
    batches,
    qconfig_structure,
)

import fxquant.qconfig.defaults as ours_defaults

# our name -> upstream's name (the two placeholder qconfigs are private upstream)
NAMES = {name: name for name in ours_defaults.__all__}
NAMES["default_fp32_placeholder_qconfig"] = "_default_fp32_placeholder_qconfig"
NAMES["default_quint8_placeholder_qconfig"] = "_default_quint8_placeholder_qconfig"

UPSTREAM_PUBLIC = {
    name for name in upstream_qconfig.__all__ if name.startswith(("default_", "float", "per_"))
}


def test_every_upstream_default_qconfig_exists() -> None:
    assert UPSTREAM_PUBLIC <= set(ours_defaults.__all__)


@pytest.mark.parametrize("name", sorted(NAMES), ids=sorted(NAMES))
def test_default_qconfig_has_upstreams_constructors(name: str) -> None:
    ours = getattr(ours_defaults, name)
    upstream = getattr(upstream_qconfig, NAMES[name])
    assert qconfig_structure(ours) == qconfig_structure(upstream)


@pytest.mark.parametrize("name", sorted(NAMES), ids=sorted(NAMES))
@pytest.mark.parametrize("field", ["activation", "weight"])
def test_default_qconfig_builds_upstreams_modules(name: str, field: str) -> None:
    ours = getattr(getattr(ours_defaults, name), field)
    upstream = getattr(getattr(upstream_qconfig, NAMES[name]), field)
    assert_same_config(ours, upstream)
    assert_same_behaviour(ours, upstream, batches())
