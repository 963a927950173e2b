"""get_default_qconfig / get_default_qat_qconfig for every backend and version, against upstream."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from qconfig.oracle_compare import (
    assert_same_behaviour,
    assert_same_config,
    batches,
    qconfig_structure,
)

from fxquant.qconfig import (
    SUPPORTED_BACKENDS,
    UnsupportedBackendError,
    get_default_qat_qconfig,
    get_default_qconfig,
)

BACKENDS = ["x86", "fbgemm", "qnnpack", "onednn"]
CASES: list[tuple[str, Callable[..., Any], Callable[..., Any], str, int]] = [
    ("ptq", get_default_qconfig, tq.get_default_qconfig, backend, 0) for backend in BACKENDS
] + [
    ("qat", get_default_qat_qconfig, tq.get_default_qat_qconfig, backend, version)
    for backend in BACKENDS
    for version in (0, 1)
]
IDS = [f"{kind}-{backend}-v{version}" for kind, _, _, backend, version in CASES]


def _both(
    ours_fn: Callable[..., Any], upstream_fn: Callable[..., Any], *args: Any
) -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ours_fn(*args), upstream_fn(*args)


def test_supported_backends() -> None:
    assert sorted(SUPPORTED_BACKENDS) == sorted(BACKENDS)


@pytest.mark.parametrize("kind, ours_fn, upstream_fn, backend, version", CASES, ids=IDS)
def test_default_qconfig_has_upstreams_constructors(
    kind: str, ours_fn: Any, upstream_fn: Any, backend: str, version: int
) -> None:
    ours, upstream = _both(ours_fn, upstream_fn, backend, version)
    # exact keywords: e.g. onednn's QAT activation leaves reduce_range unset, like upstream
    assert qconfig_structure(ours) == qconfig_structure(upstream)


@pytest.mark.parametrize("field", ["activation", "weight"])
@pytest.mark.parametrize("kind, ours_fn, upstream_fn, backend, version", CASES, ids=IDS)
def test_default_qconfig_builds_upstreams_modules(
    kind: str, ours_fn: Any, upstream_fn: Any, backend: str, version: int, field: str
) -> None:
    ours, upstream = _both(ours_fn, upstream_fn, backend, version)
    assert_same_config(getattr(ours, field), getattr(upstream, field))
    assert_same_behaviour(getattr(ours, field), getattr(upstream, field), batches())


@pytest.mark.parametrize(
    "fn, version", [(get_default_qconfig, 0), (get_default_qat_qconfig, 1)], ids=["ptq", "qat"]
)
def test_defaults_to_x86(fn: Any, version: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert qconfig_structure(fn()) == qconfig_structure(fn("x86", version))


@pytest.mark.parametrize("fn", [get_default_qconfig, get_default_qat_qconfig], ids=["ptq", "qat"])
def test_unknown_backend_names_the_valid_ones(fn: Any) -> None:
    with pytest.raises(
        UnsupportedBackendError, match=r"'tpu'.*\['fbgemm', 'x86', 'qnnpack', 'onednn'\]"
    ):
        fn("tpu")
    # upstream raises AssertionError; ours is one too, so existing handlers keep working
    with pytest.raises(AssertionError):
        fn("tpu")


@pytest.mark.parametrize(
    "fn, upstream_fn, version",
    [
        (get_default_qconfig, tq.get_default_qconfig, 1),
        (get_default_qat_qconfig, tq.get_default_qat_qconfig, 2),
        (get_default_qat_qconfig, tq.get_default_qat_qconfig, None),
    ],
    ids=["ptq-v1", "qat-v2", "qat-none"],
)
def test_unknown_version_is_rejected_like_upstream(fn: Any, upstream_fn: Any, version: Any) -> None:
    with pytest.raises(UnsupportedBackendError, match="version"):
        fn("x86", version)
    with pytest.raises(AssertionError):
        upstream_fn("x86", version)


@pytest.mark.parametrize("vnni", [True, False], ids=["vnni", "no-vnni"])
def test_onednn_warns_without_vnni_like_upstream(
    monkeypatch: pytest.MonkeyPatch, vnni: bool
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni)
    for fn in (get_default_qconfig, tq.get_default_qconfig):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn("onednn")
        assert (
            any("VNNI" in str(w.message) or "Vector Neural" in str(w.message) for w in caught)
            != vnni
        )
