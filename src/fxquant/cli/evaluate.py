"""Run a float and a quantized model on the same batches and measure how far apart their
outputs are (``fxquant.metrics``) and how long each batch takes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from fxquant.cli.dataset import Batch
from fxquant.cli.errors import BadInputError
from fxquant.cli.progress import progress
from fxquant.metrics import mean_cosine, sqnr, top1_agreement

__all__ = ["TASKS", "Comparison", "ModelRun", "compare_runs", "looks_like_logits", "run_model"]

TASKS: tuple[str, ...] = ("auto", "classification", "other")


@dataclass(frozen=True, kw_only=True)
class ModelRun:
    """A model's outputs on every batch (each output leaf concatenated along dim 0) and the
    wall-clock seconds each batch took."""

    outputs: tuple[Tensor, ...]
    seconds_per_batch: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.seconds_per_batch)


def run_model(model: nn.Module, batches: Sequence[Batch], *, what: str, show_progress: bool) -> ModelRun:
    """Run ``model`` on each batch (no grad), timing each call.

    Raises:
        BadInputError: the model fails on a batch (e.g. a shape it was not captured for).
    """
    leaves_per_batch: list[list[Tensor]] = []
    seconds = []
    with torch.no_grad():
        for batch in progress(batches, enabled=show_progress, desc=f"running {what}", unit="batch"):
            start = time.perf_counter()
            try:
                out = model(*batch)
            except (RuntimeError, AssertionError, TypeError, ValueError) as e:
                shapes = [list(t.shape) for t in batch]
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise BadInputError(
                    f"the {what} failed on a batch of shapes {shapes}: {first}; check that the "
                    "data matches the model's inputs (saved programs accept only the shapes they "
                    "were captured with)"
                ) from e
            seconds.append(time.perf_counter() - start)
            leaves_per_batch.append(_tensor_leaves(out, what))
    outputs = tuple(torch.cat(parts) if parts[0].dim() else torch.stack(parts) for parts in zip(*leaves_per_batch))
    return ModelRun(outputs=outputs, seconds_per_batch=tuple(seconds))


def _tensor_leaves(out: Any, what: str) -> list[Tensor]:
    leaves = [leaf for leaf in pytree.tree_leaves(out) if isinstance(leaf, Tensor) and leaf.is_floating_point()]
    if not leaves:
        raise BadInputError(f"the {what} returned no floating-point tensor ({type(out).__name__})")
    return [leaf.detach().float() for leaf in leaves]


def looks_like_logits(output: Tensor) -> bool:
    """``[N, C]`` scores with ``C >= 2`` whose rows are not unit vectors (embeddings usually are)."""
    if output.dim() != 2 or output.shape[1] < 2:
        return False
    norms = output.norm(dim=1)
    return not bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-3))


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Agreement of a quantized model's outputs with the float model's on the same data."""

    samples: int
    batches: int
    sqnr_db: float
    mean_cosine: float
    top1_agreement: float | None
    float_ms_per_batch: float
    quantized_ms_per_batch: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line: SQNR, top-1 agreement (classifiers), cosine, samples."""
        parts = [f"output SQNR {self.sqnr_db:.2f} dB"]
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {100 * self.top1_agreement:.1f}%")
        parts.append(f"mean cosine {self.mean_cosine:.4f}")
        return ", ".join(parts) + f" on {self.samples} samples"


def compare_runs(reference: ModelRun, actual: ModelRun, *, task: str = "auto") -> Comparison:
    """SQNR over all output leaves together, mean cosine and top-1 agreement of the first leaf
    (top-1 only for ``task="classification"``, or ``"auto"`` when it :func:`looks_like_logits`)."""
    if len(reference.outputs) != len(actual.outputs):
        raise BadInputError(
            f"the models return different numbers of tensors ({len(reference.outputs)} vs "
            f"{len(actual.outputs)}); are they the same network?"
        )
    for ref, act in zip(reference.outputs, actual.outputs):
        if ref.shape != act.shape:
            raise BadInputError(
                f"output shapes differ: float {list(ref.shape)} vs quantized {list(act.shape)}; "
                "are they the same network?"
            )
    ref_all = torch.cat([t.flatten() for t in reference.outputs])
    act_all = torch.cat([t.flatten() for t in actual.outputs])
    first_ref, first_act = reference.outputs[0], actual.outputs[0]
    rows = first_ref.shape[0] if first_ref.dim() else 1
    classify = task == "classification" or (task == "auto" and looks_like_logits(first_ref))
    return Comparison(
        samples=rows,
        batches=len(reference.seconds_per_batch),
        sqnr_db=sqnr(ref_all, act_all),
        mean_cosine=mean_cosine(first_ref.reshape(rows, -1), first_act.reshape(rows, -1)),
        top1_agreement=top1_agreement(first_ref, first_act) if classify else None,
        float_ms_per_batch=reference.median_ms,
        quantized_ms_per_batch=actual.median_ms,
    )
