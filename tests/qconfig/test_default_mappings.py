"""Default QConfigMappings against upstream's, for every backend, PTQ and QAT."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.qconfig_mapping as upstream_mapping_module
from qconfig.oracle_compare import assert_same_behaviour, batches, qconfig_structure, structure
from torch import nn

from fxquant.qconfig import (
    FIXED_QPARAMS_OP_TO_OBSERVER,
    UnsupportedBackendError,
    get_default_qat_qconfig_dict,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_dict,
    get_default_qconfig_mapping,
    get_symmetric_qnnpack_qat_qconfig_mapping,
    get_symmetric_qnnpack_qconfig_mapping,
)

BACKENDS = ["x86", "fbgemm", "qnnpack", "onednn"]
CASES = (
    [
        pytest.param(
            partial(get_default_qconfig_mapping, backend),
            partial(tq.get_default_qconfig_mapping, backend),
            id=f"ptq-{backend}",
        )
        for backend in BACKENDS
    ]
    + [
        pytest.param(
            partial(get_default_qat_qconfig_mapping, backend, version),
            partial(tq.get_default_qat_qconfig_mapping, backend, version),
            id=f"qat-{backend}-v{version}",
        )
        for backend in BACKENDS
        for version in (0, 1)
    ]
    + [
        pytest.param(
            get_symmetric_qnnpack_qconfig_mapping,
            upstream_mapping_module._get_symmetric_qnnpack_qconfig_mapping,
            id="symmetric-qnnpack-ptq",
        ),
        pytest.param(
            get_symmetric_qnnpack_qat_qconfig_mapping,
            upstream_mapping_module._get_symmetric_qnnpack_qat_qconfig_mapping,
            id="symmetric-qnnpack-qat",
        ),
    ]
)


def _build(make: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


@pytest.mark.parametrize("ours_make, upstream_make", CASES)
def test_same_entries_in_the_same_order(ours_make: Any, upstream_make: Any) -> None:
    ours, upstream = _build(ours_make), _build(upstream_make)
    assert qconfig_structure(ours.global_qconfig) == qconfig_structure(upstream.global_qconfig)
    assert list(ours.object_type_qconfigs) == list(upstream.object_type_qconfigs)
    for key, want in upstream.object_type_qconfigs.items():
        got = ours.object_type_qconfigs[key]
        assert qconfig_structure(got) == qconfig_structure(want), f"entry {key}"
    for style in (
        "module_name_regex_qconfigs",
        "module_name_qconfigs",
        "module_name_object_type_order_qconfigs",
    ):
        assert not getattr(ours, style) and not getattr(upstream, style)


@pytest.mark.parametrize("ours_make, upstream_make", CASES)
def test_entries_build_modules_that_behave_like_upstreams(
    ours_make: Any, upstream_make: Any
) -> None:
    ours, upstream = _build(ours_make), _build(upstream_make)
    # one representative per distinct qconfig (entries share qconfig objects)
    checked: set[int] = set()
    pairs = [(ours.global_qconfig, upstream.global_qconfig)]
    pairs += [(ours.object_type_qconfigs[k], v) for k, v in upstream.object_type_qconfigs.items()]
    xs = batches(n=2, shape=(4, 8))
    for got, want in pairs:
        if id(want) in checked:
            continue
        checked.add(id(want))
        assert_same_behaviour(got.activation, want.activation, xs)
        assert_same_behaviour(got.weight, want.weight, xs)


@pytest.mark.parametrize("is_qat", [False, True], ids=["ptq", "qat"])
def test_fixed_qparams_ops_share_one_qconfig_per_range_like_upstream(is_qat: bool) -> None:
    ours = _build(get_default_qat_qconfig_mapping if is_qat else get_default_qconfig_mapping)
    upstream = _build(
        tq.get_default_qat_qconfig_mapping if is_qat else tq.get_default_qconfig_mapping
    )

    def groups(mapping: Any) -> list[list[Any]]:
        by_id: dict[int, list[Any]] = {}
        for op in FIXED_QPARAMS_OP_TO_OBSERVER:
            by_id.setdefault(id(mapping.object_type_qconfigs[op]), []).append(op)
        return sorted(by_id.values(), key=len)

    assert groups(ours) == groups(upstream)
    assert len(groups(ours)) == 2  # [0, 1] and [-1, 1]


def test_fixed_qparams_table_matches_upstream() -> None:
    upstream = upstream_mapping_module._FIXED_QPARAMS_OP_TO_OBSERVER
    assert list(FIXED_QPARAMS_OP_TO_OBSERVER) == list(upstream)
    for op, observer in upstream.items():
        assert structure(FIXED_QPARAMS_OP_TO_OBSERVER[op]) == structure(observer)
        assert_same_behaviour(FIXED_QPARAMS_OP_TO_OBSERVER[op], observer, batches(n=1))


def test_fixed_qparams_values() -> None:
    mapping = _build(get_default_qconfig_mapping)
    sigmoid = mapping.object_type_qconfigs[torch.sigmoid].activation()
    tanh = mapping.object_type_qconfigs[nn.Tanh].activation()
    # [0, 1] over quint8: scale 1/256, zero point 0; [-1, 1]: scale 2/256, zero point 128
    for observer, scale, zero_point in ((sigmoid, 1.0 / 256.0, 0), (tanh, 2.0 / 256.0, 128)):
        got_scale, got_zero_point = observer.calculate_qparams()
        assert got_scale.tolist() == [scale] and got_zero_point.tolist() == [zero_point]


@pytest.mark.parametrize(
    "fn", [get_default_qconfig_mapping, get_default_qat_qconfig_mapping], ids=["ptq", "qat"]
)
def test_unknown_backend_is_rejected(fn: Any) -> None:
    with pytest.raises(UnsupportedBackendError, match="must be one of"):
        fn("cuda")


@pytest.mark.parametrize(
    "ours_fn, upstream_fn",
    [
        (get_default_qconfig_dict, tq.get_default_qconfig_dict),
        (get_default_qat_qconfig_dict, tq.get_default_qat_qconfig_dict),
    ],
    ids=["ptq", "qat"],
)
def test_deprecated_dict_functions(ours_fn: Any, upstream_fn: Any) -> None:
    with pytest.warns(FutureWarning, match="mapping"):
        got = ours_fn("qnnpack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = upstream_fn("qnnpack")
    assert list(got) == list(want)
    assert qconfig_structure(got[""]) == qconfig_structure(want[""])
    assert [k for k, _ in got["object_type"]] == [k for k, _ in want["object_type"]]
