"""prepare_fx / convert_fx time: fxquant vs upstream (torch.ao.quantization.quantize_fx).

    PYTHONPATH=src python benchmarks/prepare_convert.py [--repeats 3] [--sizes 1000,2000,5000,10000]

Models:
* a ResNet-50 architecture (bottleneck blocks 3-4-6-3, random weights, 1x3x224x224 input);
* synthetic chains of ``linear → relu → add`` blocks (width 16) with about 1,000 ... 10,000
  graph nodes, to show how prepare and convert scale with node count.

Both libraries get the default x86 qconfig mapping with a MinMax activation observer (the
graph work is what is measured, not histogram building), one calibration batch, and the
same model copy. Single-threaded; the time is the main thread's CPU time
(``time.thread_time``, so other processes on a shared machine do not inflate it), best of
``--repeats`` runs. For each model the table shows both libraries' prepare and convert times,
the time per graph node, and upstream / fxquant; a last line gives each library's per-node
time at the largest chain relative to the smallest (about 1 for linear scaling).
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
from torch import nn

import fxquant
import fxquant.quantize_fx as ours_fx

warnings.filterwarnings("ignore")


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        layers: list[nn.Module] = []
        cin = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            for j in range(blocks):
                layers.append(Bottleneck(cin, width, 2 if i > 0 and j == 0 else 1))
                cin = width * 4
        self.layers = nn.Sequential(*layers)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(cin, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(self.layers(x)), 1))


class Chain(nn.Module):
    """``blocks`` × (linear → relu → add residual): 3 graph nodes per block."""

    def __init__(self, blocks: int, width: int = 16) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        with torch.no_grad():  # small weights keep the residual sum bounded over many blocks
            for fc in self.fcs:
                fc.weight.mul_(0.01)
                fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fc in self.fcs:
            x = torch.relu(fc(x)) + x
        return x


def mapping(ns: Any) -> Any:
    qconfig = ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                         weight=ns.default_per_channel_weight_observer)
    return ns.get_default_qconfig_mapping("x86").set_global(qconfig)


def best_of(fn: Callable[[Any], Any], make_input: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time of ``fn(make_input())``, the input built outside the timing."""
    best, result = float("inf"), None
    for _ in range(repeats):
        arg = make_input()
        start = time.thread_time()
        result = fn(arg)
        best = min(best, time.thread_time() - start)
    return best, result


def time_library(model: nn.Module, x: torch.Tensor, ns: Any, prepare: Callable[..., Any],
                 convert: Callable[..., Any], repeats: int) -> tuple[float, float]:
    """Best prepare and convert times of one library."""
    t_prepare, prepared = best_of(lambda m: prepare(m, mapping(ns), (x,)), lambda: copy.deepcopy(model), repeats)
    with torch.no_grad():
        prepared(x)
    t_convert, _ = best_of(convert, lambda: copy.deepcopy(prepared), repeats)
    return t_prepare, t_convert


def measure(name: str, model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Print one table row; returns the per-node times (us) by column."""
    nodes = len(torch.fx.symbolic_trace(model).graph.nodes)
    times: dict[str, float] = {}
    for label, ns, prepare, convert in (
        ("fxq", fxquant, ours_fx.prepare_fx, ours_fx.convert_fx),
        ("up", tq, upstream_fx.prepare_fx, upstream_fx.convert_fx),
    ):
        times[f"{label} prep"], times[f"{label} conv"] = time_library(model, x, ns, prepare, convert, repeats)
    row = [f"{name:<20}", f"{nodes:>6}"]
    row += [f"{times[k] * 1e3:>9.0f}" for k in ("fxq prep", "fxq conv", "up prep", "up conv")]
    row += [f"{times[k] * 1e6 / nodes:>8.0f}" for k in ("fxq prep", "fxq conv", "up prep", "up conv")]
    row += [f"{times['up prep'] / times['fxq prep']:>6.1f}x", f"{times['up conv'] / times['fxq conv']:>6.1f}x"]
    print(" ".join(row), flush=True)
    return {k: v * 1e6 / nodes for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1000,2000,5000,10000", help="approximate node counts of the chains")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    columns = ("fxq prep", "fxq conv", "up prep", "up conv")
    print(f"{'model':<20} {'nodes':>6} " + " ".join(f"{c:>9}" for c in columns) + "  (ms, thread CPU time)")
    print(f"{'':<27}" + " ".join(f"{c:>8}" for c in columns) + "  (us per node)  up/fxq prep, conv")
    measure("resnet50", ResNet50().eval(), torch.randn(1, 3, 224, 224), args.repeats)
    per_node = [measure(f"chain ~{size}", Chain(size // 3).eval(), torch.randn(2, 16), args.repeats)
                for size in (int(s) for s in args.sizes.split(","))]
    if len(per_node) > 1:
        growth = [f"{c} {per_node[-1][c] / per_node[0][c]:.2f}" for c in columns]
        print("per-node time, largest chain / smallest chain (1.0 = linear): " + ", ".join(growth))


if __name__ == "__main__":
    main()
