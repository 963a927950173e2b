"""Small shared test helpers (importable as ``helpers``; tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import warnings

import torch

# signal-to-quantization-noise ratio of ``out`` against ``ref``, in dB
from fxquant.metrics import sqnr as sqnr_db


def assert_sqnr(ref: torch.Tensor, out: torch.Tensor, *, min_db: float) -> None:
    got = sqnr_db(ref, out)
    assert got >= min_db, f"SQNR {got:.2f} dB is below the floor of {min_db} dB"


def quiet_upstream() -> None:
    """Silence upstream's deprecation chatter in oracle comparisons."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
    warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
    warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")
