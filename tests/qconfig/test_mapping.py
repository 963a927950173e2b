"""QConfigMapping storage, to_dict/from_dict and repr, against upstream."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from fxquant.qconfig import QConfigMapping

# Stand-ins for qconfigs: the mapping stores values without inspecting them.
Q1, Q2, Q3, Q4 = "q1", "q2", "q3", "q4"


def _populate(mapping: Any) -> Any:
    return (
        mapping.set_global(Q1)
        .set_object_type(nn.Linear, Q2)
        .set_object_type("reshape", None)
        .set_object_type(torch.add, Q3)
        .set_module_name_regex("foo.*bar", Q2)
        .set_module_name_regex("foo.*", Q3)
        .set_module_name("encoder", Q4)
        .set_module_name("", Q1)
        .set_module_name_object_type_order("encoder.layer", F.linear, 0, Q3)
        .set_module_name_object_type_order("encoder.layer", F.linear, 1, None)
    )


def test_setters_chain_and_fill_upstreams_attributes() -> None:
    ours, upstream = _populate(QConfigMapping()), _populate(tq.QConfigMapping())
    for attr in (
        "global_qconfig",
        "object_type_qconfigs",
        "module_name_regex_qconfigs",
        "module_name_qconfigs",
        "module_name_object_type_order_qconfigs",
    ):
        got, want = getattr(ours, attr), getattr(upstream, attr)
        assert type(got) is type(want)
        assert got == want
        if isinstance(want, OrderedDict):
            assert list(got.items()) == list(want.items())


def test_empty_mapping() -> None:
    mapping = QConfigMapping()
    assert mapping.global_qconfig is None
    assert (
        isinstance(mapping.object_type_qconfigs, OrderedDict) and not mapping.object_type_qconfigs
    )
    assert repr(mapping) == repr(tq.QConfigMapping())


def test_setting_a_key_again_replaces_the_value_and_keeps_its_position() -> None:
    mapping = QConfigMapping().set_module_name_regex("a.*", Q1).set_module_name_regex("b.*", Q2)
    mapping.set_module_name_regex("a.*", Q3)
    assert list(mapping.module_name_regex_qconfigs.items()) == [("a.*", Q3), ("b.*", Q2)]
    mapping.set_object_type(nn.ReLU, Q1).set_object_type(nn.Conv2d, Q2).set_object_type(nn.ReLU, Q4)
    assert list(mapping.object_type_qconfigs.items()) == [(nn.ReLU, Q4), (nn.Conv2d, Q2)]


def test_repr_matches_upstream() -> None:
    ours, upstream = _populate(QConfigMapping()), _populate(tq.QConfigMapping())
    assert repr(ours) == repr(upstream)
    assert repr(ours).startswith("QConfigMapping (\n global_qconfig\n  q1\n object_type_qconfigs\n")


def test_to_dict_matches_upstream() -> None:
    got = _populate(QConfigMapping()).to_dict()
    want = _populate(tq.QConfigMapping()).to_dict()
    assert got == want
    assert list(got) == [
        "",
        "object_type",
        "module_name_regex",
        "module_name",
        "module_name_object_type_order",
    ]
    assert got["module_name_object_type_order"][0] == ("encoder.layer", F.linear, 0, Q3)


def test_from_dict_round_trip() -> None:
    original = _populate(QConfigMapping())
    restored = QConfigMapping.from_dict(original.to_dict())
    assert restored.to_dict() == original.to_dict()
    assert repr(restored) == repr(original)


def test_from_dict_reads_upstreams_dicts_and_partial_dicts() -> None:
    upstream_dict = _populate(tq.QConfigMapping()).to_dict()
    assert QConfigMapping.from_dict(upstream_dict).to_dict() == upstream_dict
    partial = QConfigMapping.from_dict({"module_name": [("fc", Q2)]})
    assert partial.global_qconfig is None
    assert partial.module_name_qconfigs == OrderedDict(fc=Q2)
    assert not partial.object_type_qconfigs


@pytest.mark.parametrize("bad_key", ["module_names", "global", "object_types"])
def test_from_dict_rejects_unknown_keys_naming_the_valid_ones(bad_key: str) -> None:
    with pytest.raises(ValueError, match=rf"'{bad_key}'.*'module_name_regex'"):
        QConfigMapping.from_dict({"": Q1, bad_key: []})


_NAMES = st.sampled_from(["", "a", "a.b", "a.b.c", "x", "x.y"])
_QCONFIGS = st.sampled_from([None, Q1, Q2, Q3])
_TYPES = st.sampled_from([nn.Linear, nn.ReLU, F.relu, torch.add, "reshape", "add"])
_ENTRIES = st.lists(
    st.one_of(
        st.tuples(st.just("set_global"), _QCONFIGS),
        st.tuples(st.just("set_object_type"), _TYPES, _QCONFIGS),
        st.tuples(
            st.just("set_module_name_regex"),
            st.sampled_from(["a.*", "a\\.b", ".*c$", ""]),
            _QCONFIGS,
        ),
        st.tuples(st.just("set_module_name"), _NAMES, _QCONFIGS),
        st.tuples(
            st.just("set_module_name_object_type_order"),
            _NAMES,
            _TYPES,
            st.integers(0, 2),
            _QCONFIGS,
        ),
    ),
    max_size=12,
)


@given(entries=_ENTRIES)
def test_any_sequence_of_sets_round_trips_and_matches_upstream(entries: list[tuple]) -> None:
    ours, upstream = QConfigMapping(), tq.QConfigMapping()
    for method, *args in entries:
        getattr(ours, method)(*args)
        getattr(upstream, method)(*args)
    assert ours.to_dict() == upstream.to_dict()
    assert repr(ours) == repr(upstream)
    assert QConfigMapping.from_dict(ours.to_dict()).to_dict() == ours.to_dict()
