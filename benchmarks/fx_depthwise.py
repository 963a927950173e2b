"""Depthwise convolutions of FX-quantized models packed for oneDNN under ``x86``: one command.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fx_depthwise.py [--repeats 9] [--quick]

(see :func:`fxquant.nn.quantized.conv.packs_for_onednn`). Rows, each a set of variants timed
in one run:

* single depthwise convolutions at EfficientNet-Lite0's shapes (the three slow stride-2 ones
  with more than 100 groups, a stride-1 one, and MobileNet-style ones with at most 100 groups,
  which the ``x86`` engine already gives oneDNN): our ``Conv2d`` packed as before (current
  engine), ours as it is, upstream's ``torch.ao.nn.quantized.Conv2d`` with the same weight;
  the largest difference from the float reference, in output quantization steps, is printed.
* EfficientNet-Lite0 (real weights and photos) at batch 1 and 8 and ResNet-50 (speed.py's) at
  batch 1, FX-quantized with the x86 default mapping: ours before / ours / upstream FX; each
  model's top-1 agreement with the float model and SQNR of the logits on 16 photos first.

"before" converts with :func:`packs_for_onednn` switched off (a benchmark-only patch). Timing:
``time.thread_time`` (CPU time of this thread, so other processes on a loaded machine do not
count), variants interleaved round-robin, median of ``--repeats`` blocks; ratios are to the
first variant.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxquant.nn.quantized import conv as qconv

sys.path.insert(0, str(Path(__file__).parent))
import speed  # benchmarks/speed.py: workloads and quantization helpers

warnings.filterwarnings("ignore")


@contextlib.contextmanager
def fbgemm_packing() -> Iterator[None]:
    """Pack as before this change: for the current engine only."""
    saved = qconv.packs_for_onednn
    qconv.packs_for_onednn = lambda *args, **kwargs: False  # type: ignore[assignment]  # benchmark-only switch
    try:
        yield
    finally:
        qconv.packs_for_onednn = saved


def medians_ms(fns: list[Callable[[], Any]], calls: int, repeats: int) -> list[float]:
    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for fn in fns:
            fn()
        for _ in range(repeats):
            for fn, samples in zip(fns, times, strict=True):
                start = time.thread_time()
                for _ in range(calls):
                    fn()
                samples.append((time.thread_time() - start) / calls * 1e3)
    return [statistics.median(t) for t in times]


def row(name: str, variants: dict[str, Callable[[], Any]], calls: int, repeats: int, note: str = "") -> None:
    ms = medians_ms(list(variants.values()), calls, repeats)
    cells = "  ".join(f"{k} {v:8.3f} ms ({v / ms[0]:5.3f}x)" for k, v in zip(variants, ms, strict=True))
    print(f"{name:44s} {cells}  {note}", flush=True)


# (channels, kernel, stride, padding, input size) at batch 1
CONV_SHAPES = {
    "Lite0 dw 144 5x5 s2 (blocks.3)": (144, 5, 2, 0, 59),
    "Lite0 dw 240 3x3 s2 (blocks.5)": (240, 3, 2, 0, 29),
    "Lite0 dw 672 5x5 s2 (blocks.11)": (672, 5, 2, 0, 17),
    "Lite0 dw 672 5x5 s1 (blocks.9)": (672, 5, 1, 2, 14),
    "MobileNet-style dw 32 3x3 s1": (32, 3, 1, 1, 112),
    "MobileNet-style dw 96 3x3 s2 (blocks.1)": (96, 3, 2, 0, 113),
}


def conv_rows(repeats: int) -> None:
    import torch.ao.nn.quantized as nnq

    gen = torch.Generator().manual_seed(0)
    for name, (c, k, s, p, size) in CONV_SHAPES.items():
        w = torch.randn(c, 1, k, k, generator=gen)
        qw = torch.quantize_per_channel(w, w.abs().amax((1, 2, 3)) / 127, torch.zeros(c, dtype=torch.long), 0, torch.qint8)
        b = torch.randn(c, generator=gen)
        x = torch.quantize_per_tensor(torch.randn(1, c, size, size, generator=gen).relu() * 3, 0.03, 0, torch.quint8)
        x = x.contiguous(memory_format=torch.channels_last)
        modules = {}
        for label, context in (("before", fbgemm_packing), ("ours", contextlib.nullcontext)):
            with context():
                m = qconv.Conv2d(c, c, k, s, p, groups=c)
                m.set_weight_bias(qw, b)
            m.scale, m.zero_point = 0.05, 64
            modules[label] = m
        up = nnq.Conv2d(c, c, k, s, p, groups=c)
        up.set_weight_bias(qw, b)
        up.scale, up.zero_point = 0.05, 64
        modules["upstream"] = up
        ref = torch.nn.functional.conv2d(x.dequantize(), qw.dequantize(), b, s, p, 1, c)
        ref_q = torch.quantize_per_tensor(ref, 0.05, 64, torch.quint8).int_repr().int()
        steps = {k2: int((m(x).int_repr().int() - ref_q).abs().max()) for k2, m in modules.items()}
        note = "max |q - float ref| steps: " + ", ".join(f"{k2} {v}" for k2, v in steps.items())
        row(name, {k2: (lambda m=m, x=x: m(x)) for k2, m in modules.items()}, 3, repeats, note)


def fx_quantized(model: nn.Module, example: tuple[torch.Tensor, ...], calibration: list[Any]) -> nn.Module:
    from fxquant.qconfig.default_mappings import get_default_qconfig_mapping
    from fxquant.quantize_fx import convert_fx, prepare_fx

    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
    speed.calibrate(prepared, calibration)
    return convert_fx(prepared)


def model_rows(repeats: int, quick: bool) -> None:
    from fxquant.zoo import efficientnet_lite0

    cases = [("EfficientNet-Lite0 FX int8", efficientnet_lite0(), (1, 8)), ("ResNet-50 FX int8", speed.ResNet50(), (1,))]
    for name, model, batches in cases:
        w = speed.image_workload(name, model, quick=True)
        example = w.holdout(1)[0]
        with fbgemm_packing():
            before = fx_quantized(w.model, example, w.calibration)
        ours = fx_quantized(w.model, example, w.calibration)
        theirs = speed.upstream_fx(w, example)
        photos = w.holdout(16)[0]
        with torch.no_grad():
            reference = w.model(*photos)
            notes = "top-1 agreement with float / SQNR dB over 16 photos: " + ", ".join(
                f"{label} {_agreement(m(*photos), reference)}"
                for label, m in (("before", before), ("ours", ours), ("upstream", theirs))
            )
        print(f"{name}: {notes}", flush=True)
        for batch in batches:
            x = w.holdout(batch)[0]
            calls = 1 if (batch > 1 or name.startswith("ResNet")) else 3
            row(f"{name} (batch {batch})", {
                "before": lambda m=before, x=x: m(*x),
                "ours": lambda m=ours, x=x: m(*x),
                "upstream": lambda m=theirs, x=x: m(*x),
            }, calls, max(3, repeats // 3) if quick else repeats)


def _agreement(logits: torch.Tensor, reference: torch.Tensor) -> str:
    top1 = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    sqnr = 10 * torch.log10(reference.pow(2).mean() / (logits - reference).pow(2).mean()).item()
    return f"{top1:.3f} / {sqnr:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="fewer repeats for the models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    print(f"thread CPU time, 1 thread, median of {args.repeats}; engine x86", flush=True)
    conv_rows(args.repeats)
    model_rows(args.repeats, args.quick)


if __name__ == "__main__":
    main()
