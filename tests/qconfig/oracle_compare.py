"""Compare fxquant constructors with upstream's (importable as ``qconfig.oracle_compare``).

* :func:`describe` builds one module from a constructor and lists its configuration;
* :func:`structure` spells out a constructor itself (class names, bound keywords, nested
  ``observer=`` constructors), which is what ``qconfig_equals`` compares;
* :func:`assert_same_behaviour` feeds the same batches to ours and upstream's and compares
  outputs and ``calculate_qparams()`` bit for bit (histogram observers: by error).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.ao.quantization as tq

CONFIG_ATTRS = (
    "dtype",
    "qscheme",
    "quant_min",
    "quant_max",
    "reduce_range",
    "ch_axis",
    "averaging_constant",
    "is_dynamic",
    "eps",
    "bins",
    "custom_op",
    "scale",
    "zero_point",
)


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, torch.Tensor) else value


def build(constructor: Any) -> Any:
    """One module from ``constructor``, with deprecation chatter silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return constructor()


def describe_module(module: Any) -> dict[str, Any]:
    description: dict[str, Any] = {"type": type(module).__name__}
    for attr in CONFIG_ATTRS:
        if hasattr(module, attr):
            description[attr] = _plain(getattr(module, attr))
    inner = getattr(module, "activation_post_process", None)
    if inner is not None:
        description["observer"] = describe_module(inner)
    return description


def describe(constructor: Any) -> dict[str, Any] | None:
    """The configuration of the module ``constructor`` builds (``None`` for ``None``)."""
    return None if constructor is None else describe_module(build(constructor))


def assert_same_config(ours: Any, upstream: Any) -> None:
    """Every configuration attribute upstream's module has, ours has with the same value."""
    want, got = describe(upstream), describe(ours)
    if want is None or got is None:
        assert want is got
        return
    _assert_subset(want, got, path="")


def _assert_subset(want: dict[str, Any], got: dict[str, Any], path: str) -> None:
    for key, value in want.items():
        assert key in got, f"ours lacks {path}{key} (upstream: {value!r})"
        if isinstance(value, dict):
            _assert_subset(value, got[key], path=f"{path}{key}.")
        else:
            assert got[key] == value, f"{path}{key}: ours {got[key]!r}, upstream {value!r}"


def structure(constructor: Any) -> Any:
    """A comparable spelling of a constructor: partials become (func, args, keywords)."""
    inner = getattr(constructor, "p", None)
    if isinstance(inner, functools.partial):
        keywords = {k: structure(v) for k, v in sorted(inner.keywords.items())}
        return ("partial", structure(inner.func), inner.args, keywords)
    if isinstance(constructor, type):
        return ("class", constructor.__name__)
    return constructor


def qconfig_structure(qconfig: Any) -> Any:
    if qconfig is None:
        return None
    return (type(qconfig).__name__, structure(qconfig.activation), structure(qconfig.weight))


def batches(n: int = 3, shape: tuple[int, ...] = (6, 8)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    return [torch.randn(shape, generator=gen) * (1.5 + i) + 0.25 * i for i in range(n)]


def _run(module: Any, xs: list[torch.Tensor]) -> tuple[list[Any], Any]:
    """Outputs of ``module`` on ``xs`` and then its qparams (or the exception type)."""
    outputs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in xs:
            outputs.append(module(x.clone()))
        try:
            qparams = module.calculate_qparams()
        except Exception as e:  # noqa: BLE001 - which error is part of the comparison
            return outputs, e
    return outputs, qparams


def _assert_tensors_equal(got: Any, want: Any, what: str) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{what}: ours is {type(got).__name__}"
        assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} vs upstream {want.dtype}"
        assert torch.equal(got, want), f"{what}: ours {got} vs upstream {want}"
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_tensors_equal(g, w, f"{what}[{i}]")
    else:
        assert got == want, f"{what}: ours {got!r} vs upstream {want!r}"


def _fake_quant_mse(xs: list[torch.Tensor], qparams: Any, module: Any) -> float:
    scale, zero_point = qparams
    x = torch.cat([t.flatten() for t in xs])
    x_hat = torch.fake_quantize_per_tensor_affine(
        x, float(scale), int(zero_point), module.quant_min, module.quant_max
    )
    return float((x - x_hat).pow(2).mean())


def assert_same_behaviour(ours: Any, upstream: Any, xs: list[torch.Tensor]) -> None:
    """Same outputs and same ``calculate_qparams()`` (or both raise) on the same batches.

    The exception is :class:`HistogramObserver`: ours searches the range differently (faster,
    exact error model), so its qparams need not be upstream's bit for bit; they must have the
    same form and quantize the observed data no worse (within 10 %) than upstream's.
    """
    if upstream is None or ours is None:
        assert ours is upstream
        return
    ours_module, upstream_module = build(ours), build(upstream)
    got_out, got_qparams = _run(ours_module, xs)
    want_out, want_qparams = _run(upstream_module, xs)
    _assert_tensors_equal(got_out, want_out, "forward output")
    if isinstance(want_qparams, Exception):
        assert isinstance(got_qparams, Exception), (
            f"upstream's calculate_qparams raises {type(want_qparams).__name__}, ours returned "
            f"{got_qparams!r}"
        )
        return
    assert not isinstance(got_qparams, Exception), f"ours raised {got_qparams!r}"
    if not isinstance(upstream_module, tq.HistogramObserver):
        _assert_tensors_equal(got_qparams, want_qparams, "calculate_qparams")
        return
    for got, want in zip(got_qparams, want_qparams, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
    assert ours_module.quant_min <= int(got_qparams[1]) <= ours_module.quant_max
    got_mse = _fake_quant_mse(xs, got_qparams, ours_module)
    want_mse = _fake_quant_mse(xs, want_qparams, upstream_module)
    assert got_mse <= 1.1 * want_mse, f"histogram MSE {got_mse:.3g} vs upstream {want_mse:.3g}"
