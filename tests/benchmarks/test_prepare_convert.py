"""Smoke test of ``benchmarks/prepare_convert.py``: its models quantize with both libraries and
a table row reports per-node times (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest
import torch

_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "prepare_convert.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("prepare_convert_benchmark", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore")
def test_chain_row_has_both_libraries_per_node_times(bench, capsys):
    per_node = bench.measure("chain ~60", bench.Chain(20).eval(), torch.randn(2, 16), repeats=1)
    assert set(per_node) == {"fxq prep", "fxq conv", "up prep", "up conv"}
    assert all(v > 0 for v in per_node.values())
    row = capsys.readouterr().out.split()
    assert row[:3] == ["chain", "~60", "62"]  # input, 20 blocks x (linear, relu, add), output
