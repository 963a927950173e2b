"""The speed plan on EfficientNet-Lite0, and what it buys end to end.

    PYTHONPATH=src python benchmarks/speed_plan.py [--repeats 30] [--threads 1]

Prints the plan ``fxquant.speed.plan_for_speed`` makes with ``X86InductorQuantizer``'s
default config for EfficientNet-Lite0 (real ImageNet weights, batch 1) and for a small MLP
head (narrow linears with GELUs between, one row: int8 cannot pay for its boundaries), then
measures in one run: fp32 eager, the fp32 captured graph with batch norms folded (what the
plan's fp32 column adds up), int8 with every annotated op quantized, and int8 with the ops
the plan keeps in float (``KeepFloatQuantizer``), both lowered to torch's quantized CPU
kernels with ``fxquant.lowering.lower_to_int8``. Latencies are medians over ``--repeats`` rounds, the
variants interleaved round-robin so load from other processes hits them alike; with one
thread they are thread CPU times (``time.thread_time``), which other processes on a shared
machine inflate least, else wall times. Top-1 agreement with fp32 on held-out photo crops
shows the plan does not trade accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fxquant.engine.fold_bn import fold_bn_into_conv_and_linear
from fxquant.lowering import lower_to_int8
from fxquant.metrics import top1_agreement
from fxquant.pt2e.capture import capture
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.quantizer import Quantizer
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.speed import plan_for_speed
from fxquant.zoo import efficientnet_lite0, imagenet_photos

sys.path.insert(0, str(Path(__file__).parent))
import speed  # benchmarks/speed.py: its round-robin timer

warnings.filterwarnings("ignore")


def quantizer() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


class MLPHead(nn.Module):
    """Narrow linears with GELUs (float ops) between them, on one row."""

    def __init__(self, width: int = 64, depth: int = 6) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = nn.functional.gelu(layer(x))
        return x


def quantize(model: nn.Module, x: torch.Tensor, q: Quantizer, calibration: torch.Tensor) -> nn.Module:
    prepared = prepare_pt2e(capture(model, (x,)), q)
    with torch.no_grad():
        for sample in calibration:
            prepared(sample[None])
    return lower_to_int8(convert_pt2e(prepared))


def fp32_graph(model: nn.Module, x: torch.Tensor) -> nn.Module:
    gm = capture(model, (x,))
    fold_bn_into_conv_and_linear(gm)
    return gm


def compare(name: str, model: nn.Module, x: torch.Tensor, calibration: torch.Tensor, args: argparse.Namespace) -> None:
    """Plan, build both int8 variants, time every variant interleaved, print the table."""
    start = time.perf_counter()
    plan = plan_for_speed(capture(model, (x,)), (x,), quantizer(), threads=args.threads)
    print(f"\n=== {name}\n{plan}\n(planning took {time.perf_counter() - start:.1f} s)\n")
    all_int8 = quantize(model, x, quantizer(), calibration)
    planned = quantize(model, x, plan.keep_float_quantizer(quantizer()), calibration)
    variants: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], float | None]] = [
        ("fp32 eager", model, None),
        ("fp32 captured graph, batch norms folded", fp32_graph(model, x), plan.expected_fp32_ms),
        ("int8, every annotated op (lower_to_int8)", all_int8, plan.all_int8_ms),
        (f"int8, speed plan ({len(plan.keep_float)} ops float)", planned, plan.expected_int8_ms),
    ]
    latencies = speed.medians_ms([lambda fn=fn: fn(x) for _, fn, _ in variants], args.repeats, args.threads == 1)
    clock = "thread CPU" if args.threads == 1 else "wall"
    print(f"{name}, batch 1, {args.threads} thread(s), median {clock} ms of {args.repeats} "
          "interleaved rounds (machine shared with other jobs)")
    print(f"  {'variant':44s} {'measured':>9s} {'vs fp32':>8s} {'predicted':>10s}")
    for (label, _, predicted), ms in zip(variants, latencies, strict=True):
        guess = f"{predicted:9.2f}" if predicted is not None else f"{'-':>9s}"
        print(f"  {label:44s} {ms:8.3f}  {latencies[0] / ms:7.2f}x {guess}")
    if name.startswith("EfficientNet"):
        holdout = imagenet_photos(args.holdout, split="holdout")
        with torch.no_grad():
            ref = torch.cat([model(b) for b in holdout.split(16)])
            for label, fn, _ in variants[2:]:
                out = torch.cat([fn(image[None]) for image in holdout])
                print(f"  {label:44s} top-1 agreement with fp32 on {args.holdout} held-out crops: "
                      f"{top1_agreement(ref, out):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--holdout", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    head = MLPHead().eval()
    compare("MLP head (6 x linear 64->64 + GELU)", head, torch.randn(1, 64), torch.randn(16, 64), args)
    compare("EfficientNet-Lite0", efficientnet_lite0().eval(), imagenet_photos(1, split="holdout"),
            imagenet_photos(args.calibration, split="calibration"), args)


if __name__ == "__main__":
    main()
