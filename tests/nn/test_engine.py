"""fxquant.nn.engine: the oneDNN engine scope shared by the quantized modules and the lowering."""

from __future__ import annotations

import pytest
import torch

from fxquant.nn.engine import HAS_ONEDNN, onednn_engine


def test_selects_onednn_inside_and_restores_after():
    assert HAS_ONEDNN  # the CPU build this project targets has it
    before = torch.backends.quantized.engine
    with onednn_engine():
        assert torch.backends.quantized.engine == "onednn"
        with onednn_engine():  # nested scopes restore their own entry engine
            assert torch.backends.quantized.engine == "onednn"
        assert torch.backends.quantized.engine == "onednn"
    assert torch.backends.quantized.engine == before


def test_restores_the_engine_when_the_block_raises():
    torch.backends.quantized.engine = "fbgemm"
    try:
        with pytest.raises(ValueError, match="inside"), onednn_engine():
            raise ValueError("inside")
        assert torch.backends.quantized.engine == "fbgemm"
    finally:
        torch.backends.quantized.engine = "x86"

