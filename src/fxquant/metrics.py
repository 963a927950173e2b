"""Agreement between a float model's outputs and a quantized model's."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mean_cosine", "sqnr", "top1_agreement"]


def sqnr(reference: Tensor, actual: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(|ref|² / |ref - actual|²)``
    (``inf`` when equal)."""
    ref, act = reference.detach().float(), actual.detach().float()
    if ref.shape != act.shape:
        raise ValueError(f"shapes differ: reference {tuple(ref.shape)} vs actual {tuple(act.shape)}")
    noise = (ref - act).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum() / noise))


def top1_agreement(reference_logits: Tensor, actual_logits: Tensor) -> float:
    """Fraction of rows whose arg-max class is the same."""
    if reference_logits.shape != actual_logits.shape:
        raise ValueError("logit shapes differ")
    return float((reference_logits.argmax(-1) == actual_logits.argmax(-1)).float().mean())


def mean_cosine(reference: Tensor, actual: Tensor) -> float:
    """Mean cosine similarity of corresponding rows (e.g. sentence embeddings)."""
    return float(torch.nn.functional.cosine_similarity(reference.float(), actual.float(), dim=-1).mean())
