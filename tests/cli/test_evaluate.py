"""Comparing float and quantized outputs: the numbers are fxquant.metrics on the concatenated
outputs, top-1 only for logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxquant.cli.errors import BadInputError
from fxquant.cli.evaluate import compare_runs, looks_like_logits, run_model
from fxquant.metrics import mean_cosine, sqnr, top1_agreement


def test_looks_like_logits():
    assert looks_like_logits(torch.randn(4, 10) * 5)
    assert not looks_like_logits(nn.functional.normalize(torch.randn(4, 10), dim=1))  # embeddings
    assert not looks_like_logits(torch.randn(4, 3, 8))
    assert not looks_like_logits(torch.randn(4, 1))


class TwoOutputs(nn.Module):
    def __init__(self, noise: float) -> None:
        super().__init__()
        self.noise = noise

    def forward(self, x):
        gen = torch.Generator().manual_seed(int(x.sum().item() * 1000) % 1000)
        logits = x @ torch.ones(3, 5) + self.noise * torch.randn(x.shape[0], 5, generator=gen)
        return {"logits": logits, "features": x * 2}


def test_compare_runs_equals_fxquant_metrics():
    batches = [(torch.randn(4, 3),) for _ in range(3)]
    ref = run_model(TwoOutputs(0.0), batches, what="float model", show_progress=False)
    act = run_model(TwoOutputs(0.3), batches, what="quantized model", show_progress=False)
    got = compare_runs(ref, act)
    logits_ref, logits_act = ref.outputs[0], act.outputs[0]
    assert logits_ref.shape == (12, 5) and len(ref.seconds_per_batch) == 3
    everything_ref = torch.cat([logits_ref.flatten(), ref.outputs[1].flatten()])
    everything_act = torch.cat([logits_act.flatten(), act.outputs[1].flatten()])
    assert got.sqnr_db == sqnr(everything_ref, everything_act)
    assert got.top1_agreement == top1_agreement(logits_ref, logits_act)
    assert got.mean_cosine == mean_cosine(logits_ref, logits_act)
    assert (got.samples, got.batches) == (12, 3)
    assert compare_runs(ref, act, task="other").top1_agreement is None


def test_mismatched_models_are_reported():
    batches = [(torch.randn(2, 3),)]
    ref = run_model(nn.Linear(3, 4), batches, what="float model", show_progress=False)
    act = run_model(nn.Linear(3, 5), batches, what="quantized model", show_progress=False)
    with pytest.raises(BadInputError, match=r"output shapes differ: float \[2, 4\] vs quantized \[2, 5\]"):
        compare_runs(ref, act)
    with pytest.raises(BadInputError, match="the quantized model failed on a batch of shapes"):
        run_model(nn.Linear(4, 4), batches, what="quantized model", show_progress=False)
