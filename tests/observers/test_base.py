"""with_args / with_callable_args factories and base-class behaviour."""

from __future__ import annotations

import itertools

import torch

from fxquant.observers.minmax import MinMaxObserver, PerChannelMinMaxObserver


def test_with_args_makes_distinct_instances_with_bound_arguments():
    factory = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    a, b = factory(), factory()
    assert a is not b and a.dtype == torch.qint8 and a.qscheme == torch.per_tensor_symmetric
    # later with_args and call-time keywords override earlier ones
    assert factory.with_args(dtype=torch.quint8)().dtype == torch.quint8
    assert factory(dtype=torch.quint8).dtype == torch.quint8
    assert "MinMaxObserver" in repr(factory)


def test_with_callable_args_calls_each_time():
    counter = itertools.count(1)
    factory = PerChannelMinMaxObserver.with_callable_args(ch_axis=lambda: next(counter))
    assert factory().ch_axis == 1 and factory().ch_axis == 2
    # a call-time value wins over the callable
    assert factory(ch_axis=0).ch_axis == 0
    chained = factory.with_args(dtype=torch.qint8)
    obs = chained()
    assert obs.dtype == torch.qint8 and obs.ch_axis == 3


def test_observer_is_a_module_in_a_model():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), MinMaxObserver())
    model(torch.randn(2, 3))
    assert "1.min_val" in model.state_dict()
    assert model[1].min_val.item() < model[1].max_val.item()
