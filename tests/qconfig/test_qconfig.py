"""QConfig, QConfigDynamic and qconfig_equals, with upstream as the oracle."""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from fxquant.fake_quantize import FakeQuantize
from fxquant.observers.minmax import MinMaxObserver, PerChannelMinMaxObserver
from fxquant.qconfig import QConfig, QConfigDynamic, qconfig_equals

OURS = types.SimpleNamespace(
    QConfig=QConfig,
    MinMaxObserver=MinMaxObserver,
    PerChannelMinMaxObserver=PerChannelMinMaxObserver,
    FakeQuantize=FakeQuantize,
    qconfig_equals=qconfig_equals,
)
UPSTREAM = types.SimpleNamespace(
    QConfig=tq.QConfig,
    MinMaxObserver=tq.MinMaxObserver,
    PerChannelMinMaxObserver=tq.PerChannelMinMaxObserver,
    FakeQuantize=tq.FakeQuantize,
    qconfig_equals=tq.qconfig_equals,
)
SIDES = pytest.mark.parametrize("ns", [OURS, UPSTREAM], ids=["fxquant", "upstream"])


# --- QConfig ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["activation", "weight"])
def test_qconfig_rejects_observer_instance_and_says_what_to_pass(field: str) -> None:
    args: dict[str, Any] = {"activation": MinMaxObserver, "weight": MinMaxObserver}
    args[field] = MinMaxObserver()
    with pytest.raises(ValueError, match=rf"(?s)instance of MinMaxObserver as {field}.*with_args"):
        QConfig(**args)
    # upstream rejects the same input
    up_args: dict[str, Any] = {"activation": tq.MinMaxObserver, "weight": tq.MinMaxObserver}
    up_args[field] = tq.MinMaxObserver()
    with pytest.raises(ValueError):
        tq.QConfig(**up_args)


@pytest.mark.parametrize(
    "activation, weight",
    [
        (MinMaxObserver, MinMaxObserver),
        (MinMaxObserver.with_args(dtype=torch.qint8), None),
        (nn.Identity, FakeQuantize.with_args(observer=MinMaxObserver)),
    ],
    ids=["classes", "partial-and-none", "identity-and-fake-quant"],
)
def test_qconfig_is_a_namedtuple_of_constructors(activation: Any, weight: Any) -> None:
    qconfig = QConfig(activation, weight)
    assert isinstance(qconfig, tuple)
    assert qconfig._fields == ("activation", "weight")
    assert qconfig.activation is activation and qconfig.weight is weight
    assert QConfig(weight=weight, activation=activation) == qconfig
    assert repr(qconfig).startswith("QConfig(activation=")


def test_qconfig_dynamic_warns_defaults_to_identity_and_checks_weight_only() -> None:
    with pytest.warns(FutureWarning, match="QConfigDynamic"):
        qconfig = QConfigDynamic(weight=MinMaxObserver)
    assert qconfig.activation is nn.Identity and qconfig.weight is MinMaxObserver
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert QConfigDynamic() == (nn.Identity, nn.Identity) == tq.QConfigDynamic()
        with pytest.raises(ValueError, match="with_args"):
            QConfigDynamic(weight=MinMaxObserver())
        with pytest.raises(ValueError):
            tq.QConfigDynamic(weight=tq.MinMaxObserver())
        # like upstream, an activation instance is not checked
        assert isinstance(QConfigDynamic(activation=nn.Identity()).activation, nn.Identity)
        assert isinstance(tq.QConfigDynamic(activation=nn.Identity()).activation, nn.Identity)


# --- qconfig_equals truth table ---------------------------------------------------------------

# Each case builds two qconfigs from a namespace (ours or upstream's) and gives the answer.
Case = Callable[[Any], tuple[Any, Any]]


def _mm(ns: Any, **kw: Any) -> Any:
    return ns.MinMaxObserver.with_args(**kw)


def _fq(ns: Any, observer: Any, **kw: Any) -> Any:
    return ns.FakeQuantize.with_args(observer=observer, **kw)


EQUALS_CASES: dict[str, tuple[Case, bool]] = {
    "none-none": (lambda ns: (None, None), True),
    "none-qconfig": (lambda ns: (None, ns.QConfig(ns.MinMaxObserver, None)), False),
    "qconfig-none": (lambda ns: (ns.QConfig(ns.MinMaxObserver, None), None), False),
    "same-classes": (
        lambda ns: (
            ns.QConfig(ns.MinMaxObserver, ns.PerChannelMinMaxObserver),
            ns.QConfig(ns.MinMaxObserver, ns.PerChannelMinMaxObserver),
        ),
        True,
    ),
    "different-weight-class": (
        lambda ns: (
            ns.QConfig(ns.MinMaxObserver, ns.MinMaxObserver),
            ns.QConfig(ns.MinMaxObserver, ns.PerChannelMinMaxObserver),
        ),
        False,
    ),
    "separately-built-equal-partials": (
        lambda ns: (
            ns.QConfig(_mm(ns, dtype=torch.qint8, eps=0.5), None),
            ns.QConfig(_mm(ns, eps=0.5, dtype=torch.qint8), None),
        ),
        True,
    ),
    "partials-different-keyword": (
        lambda ns: (
            ns.QConfig(_mm(ns, dtype=torch.qint8), None),
            ns.QConfig(_mm(ns, dtype=torch.quint8), None),
        ),
        False,
    ),
    "partial-vs-class": (
        lambda ns: (ns.QConfig(_mm(ns), None), ns.QConfig(ns.MinMaxObserver, None)),
        False,
    ),
    "fake-quant-equal-nested-observer": (
        lambda ns: (
            ns.QConfig(_fq(ns, _mm(ns, eps=0.25), quant_min=0, quant_max=15), None),
            ns.QConfig(_fq(ns, _mm(ns, eps=0.25), quant_min=0, quant_max=15), None),
        ),
        True,
    ),
    "fake-quant-different-nested-observer": (
        lambda ns: (
            ns.QConfig(_fq(ns, _mm(ns, eps=0.25)), None),
            ns.QConfig(_fq(ns, _mm(ns, eps=0.5)), None),
        ),
        False,
    ),
    "fake-quant-different-outer-keyword": (
        lambda ns: (
            ns.QConfig(_fq(ns, ns.MinMaxObserver, quant_max=15), None),
            ns.QConfig(_fq(ns, ns.MinMaxObserver, quant_max=7), None),
        ),
        False,
    ),
    "chained-with-args-different-base": (
        lambda ns: (
            ns.QConfig(_mm(ns, eps=0.5).with_args(dtype=torch.qint8), None),
            ns.QConfig(_mm(ns, eps=0.5, dtype=torch.qint8), None),
        ),
        False,
    ),
    # upstream compares func, args and keywords of the partial, not the callable args
    "callable-args-are-not-compared": (
        lambda ns: (
            ns.QConfig(_mm(ns).with_callable_args(eps=lambda: 0.5), None),
            ns.QConfig(_mm(ns).with_callable_args(eps=lambda: 0.25), None),
        ),
        True,
    ),
}


@SIDES
@pytest.mark.parametrize("case", list(EQUALS_CASES), ids=list(EQUALS_CASES))
def test_qconfig_equals_truth_table(ns: Any, case: str) -> None:
    build, expected = EQUALS_CASES[case]
    q1, q2 = build(ns)
    assert ns.qconfig_equals(q1, q2) is expected
    assert ns.qconfig_equals(q2, q1) is expected


def test_qconfig_equals_accepts_upstream_partials_during_migration() -> None:
    # constructors built by upstream's with_args compare structurally too
    up = tq.MinMaxObserver.with_args(eps=0.5)
    up_again = tq.MinMaxObserver.with_args(eps=0.5)
    assert qconfig_equals(QConfig(up, None), QConfig(up_again, None))


def test_qconfig_equals_falls_back_to_eq_for_non_qconfigs() -> None:
    assert qconfig_equals((1, 2), (1, 2))  # type: ignore[arg-type]
    assert not qconfig_equals("a", "b")  # type: ignore[arg-type]


_KEYWORDS = st.dictionaries(
    st.sampled_from(["eps", "quant_min", "quant_max", "reduce_range"]),
    st.one_of(st.integers(-3, 3), st.booleans(), st.sampled_from([0.5, 2.0**-12])),
    max_size=4,
)


@given(kw1=_KEYWORDS, kw2=_KEYWORDS, nest=st.booleans())
def test_qconfig_equals_agrees_with_upstream(kw1: dict, kw2: dict, nest: bool) -> None:
    def make(ns: Any, kw: dict) -> Any:
        ctr = ns.MinMaxObserver.with_args(**kw)
        return ns.QConfig(ns.FakeQuantize.with_args(observer=ctr) if nest else ctr, None)

    ours = qconfig_equals(make(OURS, kw1), make(OURS, kw2))
    assert ours == tq.qconfig_equals(make(UPSTREAM, kw1), make(UPSTREAM, kw2))
    assert ours == (kw1 == kw2)
