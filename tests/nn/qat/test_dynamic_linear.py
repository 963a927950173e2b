"""QAT ``Linear`` for dynamic quantization: needs a memoryless activation observer."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.qat.dynamic as tnnqatd
import torch.ao.quantization as tq

import fxquant
import fxquant.nn.qat as nnqat


def test_accepts_memoryless_qconfig_and_matches_upstream():
    ours = nnqat.dynamic.Linear(6, 5, qconfig=fxquant.default_dynamic_qat_qconfig)
    theirs = tnnqatd.Linear(6, 5, qconfig=tq.default_dynamic_qat_qconfig)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 6)
    assert torch.equal(ours(x), theirs(x))
    assert isinstance(ours, nnqat.Linear)


@pytest.mark.filterwarnings("ignore:reduce_range is deprecated")
def test_rejects_observer_with_memory():
    with pytest.raises(nnqat.QATModuleError, match="memoryless"):
        nnqat.dynamic.Linear(6, 5, qconfig=fxquant.default_qat_qconfig)
