"""PT2E int8 through Inductor vs fp32: latency at batch 1, single thread, and agreement.

    PYTHONPATH=src python benchmarks/pt2e_inductor.py [--repeats 30] [--models small,lite0]

Models: a small conv net (conv-relu, conv+add residual, pooling, linear) at 64x64, and
EfficientNet-Lite0 (``fxquant.zoo.efficientnet_lite0()``, ImageNet weights) at 224x224; both
calibrated on real photo crops (``fxquant.zoo.imagenet_photos``), measured on held-out crops.
Quantized with ``X86InductorQuantizer`` and its default config (uint8 activations, int8
per-channel weights, conv+relu/relu6 and conv+add(+relu) annotated as fused patterns).

Variants, timed round-robin, median of ``--repeats`` runs each:
* fp32 eager, and fp32 ``torch.compile`` with freezing (Inductor's own fp32 best);
* int8 q/dq reference model, eager (the numerics, not a fast path);
* int8 ``lower_pt2e_quantized_to_x86`` (oneDNN int8 kernels, remaining ops eager);
* int8 ``torch.compile`` of the converted model with freezing (the int8 passes plus codegen).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch._inductor.config as inductor_config
from torch import nn

from fxquant.pt2e.lowering import lower_pt2e_quantized_to_x86
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.zoo import efficientnet_lite0, imagenet_photos

warnings.filterwarnings("ignore")


def quantizer() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.conv1 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = torch.relu(self.conv1(y) + y)
        y = torch.relu(self.conv2(y))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def median_ms(fns: list[Callable[[], Any]], repeats: int, warmup: int = 3) -> list[float]:
    """Median latency of each function, measured round-robin so that load from other
    processes hits all of them alike; each timed call follows an untimed one of the same
    function (the first call after another model's refills the caches)."""
    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns:
                fn()
        for _ in range(repeats):
            for fn, fn_times in zip(fns, times, strict=True):
                fn()
                start = time.perf_counter()
                fn()
                fn_times.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def compiled(model: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile with freezing (set for the whole run in ``main``: a recompile without it
    would silently lose the int8 passes)."""
    assert inductor_config.freezing
    with torch.no_grad():
        fn = torch.compile(model)
        fn(x)  # compile now, not in the timed loop
    return fn


def sqnr_db(reference: torch.Tensor, out: torch.Tensor) -> float:
    noise = (reference - out).pow(2).sum()
    return float(10 * torch.log10(reference.pow(2).sum() / noise))


def run(name: str, model: nn.Module, size: int, repeats: int, calib: int, holdout: int) -> None:
    model.eval()
    x = imagenet_photos(1, split="holdout", size=size)
    gm = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer())
    with torch.no_grad():
        for image in imagenet_photos(calib, split="calibration", size=size):
            gm(image[None])
    q = convert_pt2e(gm)
    start = time.perf_counter()
    lowered = lower_pt2e_quantized_to_x86(q, (x,))
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    int8_compiled = compiled(q, x)
    compile_s = time.perf_counter() - start
    fp32_compiled = compiled(copy.deepcopy(model), x)
    variants: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
        ("fp32 eager", model),
        ("fp32 torch.compile (freezing)", fp32_compiled),
        ("int8 q/dq reference, eager", q),
        ("int8 lower_pt2e_quantized_to_x86", lowered),
        ("int8 torch.compile (freezing)", int8_compiled),
    ]
    print(f"\n{name}: batch 1, {size}x{size}, 1 thread  (lowering {lower_s:.1f} s, "
          f"int8 compile {compile_s:.1f} s)")
    latencies = median_ms([lambda fn=fn: fn(x) for _, fn in variants], repeats)
    for (label, _), ms in zip(variants, latencies, strict=True):
        print(f"  {label:36s} {ms:8.2f} ms   {latencies[0] / ms:5.2f}x vs fp32 eager")
    _agreement(model, q, int8_compiled, size, holdout)


def _agreement(model: nn.Module, q: nn.Module, int8: Callable, size: int, holdout: int) -> None:
    images = imagenet_photos(holdout, split="holdout", size=size)
    with torch.no_grad():
        ref = torch.cat([model(i[None]) for i in images])
        qdq = torch.cat([q(i[None]) for i in images])
        out = torch.cat([int8(i[None]) for i in images])
    same = (ref.argmax(1) == out.argmax(1)).float().mean()
    print(f"  held-out crops: {holdout}; compiled int8 vs fp32: top-1 agreement {same:.1%}, "
          f"logit SQNR {sqnr_db(ref, out):.1f} dB; compiled int8 vs q/dq eager: "
          f"max |diff| {(qdq - out).abs().max():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models", default="small,lite0")
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--holdout", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    inductor_config.freezing = True
    models = args.models.split(",")
    if "small" in models:
        run("small conv net", SmallNet(), 64, args.repeats, args.calibration, args.holdout)
    if "lite0" in models:
        lite0 = efficientnet_lite0()
        run("EfficientNet-Lite0", lite0, 224, args.repeats, args.calibration, args.holdout)


if __name__ == "__main__":
    main()
