"""QuantType has upstream's members and values."""

from __future__ import annotations

import pytest
import torch.ao.quantization as tq

from fxquant.eager import QuantType
from fxquant.eager.quant_type import _get_quant_type_to_str, _quant_type_from_str


def test_members_and_values_match_upstream():
    assert {m.name: m.value for m in QuantType} == {m.name: m.value for m in tq.QuantType}


@pytest.mark.parametrize("quant_type", list(QuantType), ids=lambda q: q.name)
def test_name_round_trip(quant_type):
    assert _quant_type_from_str(_get_quant_type_to_str(quant_type)) is quant_type


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="'static'"):
        _quant_type_from_str("int4")
