"""The qconfig resolver: precedence rules, and agreement with upstream's FX prepare."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.ao.quantization.fx import qconfig_mapping_utils as upstream_utils
from torch.ao.quantization.fx.tracer import QuantizationTracer
from torch.nn import functional as F

from fxquant.qconfig import (
    QConfigMapping,
    module_name_qconfig,
    qconfig_for_attribute,
    qconfig_for_function_call,
    qconfig_for_method_call,
    qconfig_for_module_call,
    qconfig_on_module_device,
    resolve_qconfig,
)

# Stand-ins for qconfigs: the resolver never looks inside them.
GLOBAL, TYPE, REGEX, NAME, ORDER = "global", "type", "regex", "name", "order"


# --- precedence, one level at a time ----------------------------------------------------------


def _all_levels() -> QConfigMapping:
    return (
        QConfigMapping()
        .set_global(GLOBAL)
        .set_object_type(nn.Linear, TYPE)
        .set_module_name_regex("enc.*", REGEX)
        .set_module_name("enc.fc", NAME)
        .set_module_name_object_type_order("enc.fc", nn.Linear, 2, ORDER)
    )


@pytest.mark.parametrize(
    "module_name, object_type, call_index, expected",
    [
        ("dec.fc", nn.Conv2d, None, GLOBAL),
        ("dec.fc", nn.Linear, None, TYPE),
        ("enc.conv", nn.Linear, None, REGEX),
        ("enc.fc", nn.Linear, None, NAME),
        ("enc.fc", nn.Linear, 1, NAME),
        ("enc.fc", nn.Linear, 2, ORDER),
        ("enc.fc", nn.Conv2d, 2, NAME),
    ],
    ids=[
        "global",
        "type-over-global",
        "regex-over-type",
        "name-over-regex",
        "order-needs-same-index",
        "order-over-name",
        "order-needs-same-type",
    ],
)
def test_each_level_overrides_the_weaker_ones(
    module_name: str, object_type: Any, call_index: int | None, expected: str
) -> None:
    assert resolve_qconfig(_all_levels(), module_name, object_type, call_index) == expected


def test_module_name_falls_back_to_the_nearest_enclosing_module() -> None:
    mapping = (
        QConfigMapping().set_global(GLOBAL).set_module_name("a", "a").set_module_name("a.b", "a.b")
    )
    assert resolve_qconfig(mapping, "a.b.c.d", nn.Linear) == "a.b"
    assert resolve_qconfig(mapping, "a.x", nn.Linear) == "a"
    assert resolve_qconfig(mapping, "ab", nn.Linear) == GLOBAL  # a prefix of the name, not a parent
    assert resolve_qconfig(mapping, "", nn.Linear) == GLOBAL


def test_the_root_name_never_matches_a_module_name_entry() -> None:
    # upstream stops the parent walk at the root: set_module_name("", ...) has no effect
    mapping = QConfigMapping().set_global(GLOBAL).set_module_name("", NAME)
    assert resolve_qconfig(mapping, "fc", nn.Linear) == GLOBAL
    assert module_name_qconfig(mapping, "", GLOBAL) == GLOBAL


def test_regexes_use_re_match_in_insertion_order_and_reset_keeps_the_position() -> None:
    mapping = (
        QConfigMapping()
        .set_module_name_regex("foo.*bar.*conv[0-9]+", "first")
        .set_module_name_regex("foo.*bar.*", "second")
        .set_module_name_regex("foo.*", "third")
    )
    assert resolve_qconfig(mapping, "foo.bar.conv0", nn.Conv2d) == "first"
    assert resolve_qconfig(mapping, "foo.bar.linear", nn.Linear) == "second"
    assert resolve_qconfig(mapping, "foo.baz.relu", nn.ReLU) == "third"
    assert resolve_qconfig(mapping, "x.foo", nn.ReLU) is None  # re.match anchors at the start
    mapping.set_module_name_regex("foo.*", "third again")
    assert resolve_qconfig(mapping, "foo.bar.conv0", nn.Conv2d) == "first"
    assert resolve_qconfig(mapping, "foo.baz", nn.ReLU) == "third again"


def test_none_entries_override_too_and_fallback_replaces_global() -> None:
    mapping = QConfigMapping().set_global(GLOBAL).set_module_name("skip", None)
    assert resolve_qconfig(mapping, "skip.fc", nn.Linear) is None
    assert resolve_qconfig(mapping, "fc", nn.Linear, fallback="given") == "given"
    assert resolve_qconfig(mapping, "fc", nn.Linear, fallback=None) is None


def test_module_call_counts_order_in_the_parent_module() -> None:
    mapping = QConfigMapping().set_module_name_object_type_order("block", nn.Linear, 1, ORDER)
    assert qconfig_for_module_call(mapping, "block.fc2", nn.Linear, 1) == ORDER
    assert qconfig_for_module_call(mapping, "block.fc2", nn.Linear, 0) is None
    assert qconfig_for_module_call(mapping, "block", nn.Linear, 1) is None


def test_function_call_honours_its_scope_modules_type_over_the_function() -> None:
    mapping = (
        QConfigMapping().set_object_type(torch.add, "add").set_object_type(nn.Sequential, "seq")
    )
    assert qconfig_for_function_call(mapping, torch.add, "m", nn.Module, 0) == "add"
    assert qconfig_for_function_call(mapping, torch.add, "m", nn.Sequential, 0) == "seq"


def test_method_call_uses_its_name_then_its_scope() -> None:
    mapping = QConfigMapping().set_global(GLOBAL).set_object_type("reshape", "reshape")
    assert qconfig_for_method_call(mapping, "reshape", "m", nn.Module) == "reshape"
    assert qconfig_for_method_call(mapping, "view", "m", nn.Module) == GLOBAL
    mapping.set_module_name("m", NAME)
    assert qconfig_for_method_call(mapping, "reshape", "m", nn.Module) == NAME


# --- agreement with upstream's helpers on random mappings -------------------------------------

_NAMES = ["", "a", "a.b", "a.b.c", "ab", "x.a"]
_TYPES = [nn.Linear, nn.ReLU, nn.Sequential, F.linear, torch.add, "reshape"]
_QCONFIGS = st.sampled_from([None, "q1", "q2", "q3", "q4"])
_ENTRIES = st.lists(
    st.one_of(
        st.tuples(st.just("set_global"), _QCONFIGS),
        st.tuples(st.just("set_object_type"), st.sampled_from(_TYPES), _QCONFIGS),
        st.tuples(
            st.just("set_module_name_regex"),
            st.sampled_from(["a.*", "a\\.b$", ".*c", "x", "b"]),
            _QCONFIGS,
        ),
        st.tuples(st.just("set_module_name"), st.sampled_from(_NAMES), _QCONFIGS),
        st.tuples(
            st.just("set_module_name_object_type_order"),
            st.sampled_from(_NAMES),
            st.sampled_from(_TYPES),
            st.integers(0, 1),
            _QCONFIGS,
        ),
    ),
    max_size=10,
)


def _both_mappings(entries: list[tuple]) -> tuple[QConfigMapping, tq.QConfigMapping]:
    ours, upstream = QConfigMapping(), tq.QConfigMapping()
    for method, *args in entries:
        getattr(ours, method)(*args)
        getattr(upstream, method)(*args)
    return ours, upstream


def _upstream_resolve(
    mapping: Any, name: str, object_type: Any, index: int | None, fallback: Any
) -> Any:
    qconfig = upstream_utils._maybe_adjust_qconfig_for_module_type_or_name(
        mapping, object_type, name, fallback
    )
    if index is None:
        return qconfig
    return upstream_utils._maybe_adjust_qconfig_for_module_name_object_type_order(
        mapping, name, object_type, index, qconfig
    )


@given(
    entries=_ENTRIES,
    name=st.sampled_from(_NAMES + ["a.b.c.d"]),
    object_type=st.sampled_from(_TYPES),
    index=st.one_of(st.none(), st.integers(0, 1)),
)
def test_resolve_qconfig_agrees_with_upstreams_helpers(
    entries: list[tuple], name: str, object_type: Any, index: int | None
) -> None:
    ours, upstream = _both_mappings(entries)
    want = _upstream_resolve(upstream, name, object_type, index, upstream.global_qconfig)
    assert resolve_qconfig(ours, name, object_type, index) == want


# --- agreement with upstream's FX prepare on a traced model -----------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.w = nn.Parameter(torch.randn(4, 4))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(self.fc(x), self.w)
        x = self.act(F.linear(x, self.w))
        return torch.add(x.reshape(-1, 4), 1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = Block()
        self.dec = Block()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dec(self.enc(x)).sigmoid())


def _traced() -> tuple[nn.Module, Any, dict[str, Any]]:
    model = Net()
    tracer = QuantizationTracer([], [])
    graph = tracer.trace(model)
    return model, graph, dict(tracer.node_name_to_scope)


MODEL, GRAPH, SCOPES = _traced()
MODULES = dict(MODEL.named_modules())


def _ours_per_node(mapping: QConfigMapping) -> dict[str, Any]:
    """What the FX flow will do: one qconfig_for_* call per node, counting calls per scope."""
    seen: dict[str, dict[Any, int]] = defaultdict(lambda: defaultdict(int))
    result: dict[str, Any] = {}
    for node in GRAPH.nodes:
        if node.op == "get_attr":
            owner = node.target.rpartition(".")[0]
            result[node.name] = qconfig_for_attribute(mapping, owner, type(MODULES[owner]))
        elif node.op == "call_function":
            scope_name, scope_type = SCOPES[node.name]
            index = seen[scope_name][node.target]
            seen[scope_name][node.target] += 1
            result[node.name] = qconfig_for_function_call(
                mapping, node.target, scope_name, scope_type, index
            )
        elif node.op == "call_method":
            scope_name, scope_type = SCOPES[node.name]
            result[node.name] = qconfig_for_method_call(
                mapping, node.target, scope_name, scope_type
            )
        elif node.op == "call_module":
            module_type = type(MODULES[node.target])
            parent = node.target.rpartition(".")[0]
            index = seen[parent][module_type]
            seen[parent][module_type] += 1
            qconfig = qconfig_for_module_call(mapping, node.target, module_type, index)
            # as upstream, observers of a module call are built on the module's device
            result[node.name] = qconfig_on_module_device(qconfig, MODULES[node.target])
        else:
            result[node.name] = None
    return result


def _qconfig(i: int) -> tq.QConfig:
    return tq.QConfig(
        activation=tq.MinMaxObserver.with_args(eps=float(i)), weight=tq.MinMaxObserver
    )


_FX_QCONFIGS = st.one_of(st.none(), st.integers(1, 5).map(_qconfig))
_FX_NAMES = ["", "enc", "dec", "enc.fc", "dec.act", "head"]
_FX_TYPES = [nn.Linear, nn.ReLU, Block, F.linear, torch.add, "reshape", "sigmoid"]
_FX_ENTRIES = st.lists(
    st.one_of(
        st.tuples(st.just("set_global"), _FX_QCONFIGS),
        st.tuples(st.just("set_object_type"), st.sampled_from(_FX_TYPES), _FX_QCONFIGS),
        st.tuples(
            st.just("set_module_name_regex"),
            st.sampled_from(["enc.*", "dec\\.", ".*fc", "h", "fc"]),
            _FX_QCONFIGS,
        ),
        st.tuples(st.just("set_module_name"), st.sampled_from(_FX_NAMES), _FX_QCONFIGS),
        st.tuples(
            st.just("set_module_name_object_type_order"),
            st.sampled_from(_FX_NAMES),
            st.sampled_from(_FX_TYPES),
            st.integers(0, 1),
            _FX_QCONFIGS,
        ),
    ),
    max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(entries=_FX_ENTRIES)
def test_per_node_resolution_agrees_with_upstream_fx_prepare(entries: list[tuple]) -> None:
    ours_mapping, upstream_mapping = _both_mappings(entries)
    want = upstream_utils._generate_node_name_to_qconfig(
        MODEL, MODULES, GRAPH, upstream_mapping, SCOPES
    )
    got = _ours_per_node(ours_mapping)
    assert set(got) == set(want)
    for name, qconfig in want.items():
        assert tq.qconfig_equals(got[name], qconfig), (
            f"node {name}: ours {got[name]}, upstream {qconfig}"
        )


def test_traced_model_exercises_every_node_kind() -> None:
    ops = {node.op for node in GRAPH.nodes}
    assert {"get_attr", "call_function", "call_method", "call_module"} <= ops
