"""What skipping the per-call ``__torch_function__`` probe of packed weights saves: one command.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/packed_call_overhead.py [--repeats 15] [--quick]

(see :mod:`fxquant.nn.packed_call`). Rows, each a set of variants timed in one run:

* per module kind (small real shapes): our quantized module with its kernel called bare
  (``torch.ops.quantized.<op>(...)``, as before), our module as it is (the kernel through
  :func:`fxquant.nn.packed_call.packed_kernel`), and upstream's ``torch.ao.nn`` module with
  the same weights (outputs checked equal).
* models at batch 1: EfficientNet-Lite0 (real weights and photos) and ResNet-50 (speed.py's,
  random weights), each FX-quantized with the x86 default mapping (``prepare_fx`` /
  ``convert_fx``), ours bare / ours / upstream ``torch.ao`` FX; MiniLM-L6 (real weights, one
  128-token sequence) dynamically quantized by ``quantize_dynamic``, ours bare / ours /
  upstream; and MiniLM-L6's PT2E dynamic lowering (``lower_to_int8``), with its linears
  called bare / through :mod:`fxquant.lowering.kernels`.

"bare" patches our modules' kernels back to the plain ops for the duration of the timed block
(a benchmark-only switch). Timing: ``time.thread_time`` (CPU time of this thread; other
processes on a loaded machine do not count), variants interleaved round-robin, median of
``--repeats`` blocks.
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

from fxquant.lowering import kernels, lower_to_int8

sys.path.insert(0, str(Path(__file__).parent))
import speed  # benchmarks/speed.py: workloads and quantization helpers

warnings.filterwarnings("ignore")
Q = torch.ops.quantized
Variant = tuple[Callable[[], Any], Callable[[], contextlib.AbstractContextManager[Any]]]


# ----------------------------------------------------------------------------- bare switch
def _kernel_slots() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, bare op) of every packed-weight kernel our modules call."""
    import fxquant.nn.intrinsic.quantized.dynamic.linear_relu as dyn_linear_relu
    import fxquant.nn.quantized.dynamic.linear as dyn_linear
    from fxquant.nn.intrinsic.quantized import conv_add, conv_relu, linear_relu
    from fxquant.nn.quantized import conv, conv_transpose, embedding_ops, linear

    return [
        (conv.Conv1d, "_OP", Q.conv1d), (conv.Conv2d, "_OP", Q.conv2d), (conv.Conv3d, "_OP", Q.conv3d),
        (conv_relu.ConvReLU1d, "_OP", Q.conv1d_relu), (conv_relu.ConvReLU2d, "_OP", Q.conv2d_relu),
        (conv_relu.ConvReLU3d, "_OP", Q.conv3d_relu),
        (conv_add.ConvAdd2d, "_OP", Q.conv2d_add), (conv_add.ConvAddReLU2d, "_OP", Q.conv2d_add_relu),
        (conv_transpose.ConvTranspose1d, "_OP", Q.conv_transpose1d),
        (conv_transpose.ConvTranspose2d, "_OP", Q.conv_transpose2d),
        (conv_transpose.ConvTranspose3d, "_OP", Q.conv_transpose3d),
        (linear, "_LINEAR", Q.linear), (linear_relu, "_LINEAR_RELU", Q.linear_relu),
        (dyn_linear, "_LINEAR_DYNAMIC", Q.linear_dynamic),
        (dyn_linear, "_LINEAR_DYNAMIC_FP16", Q.linear_dynamic_fp16),
        (dyn_linear_relu, "_LINEAR_RELU_DYNAMIC", Q.linear_relu_dynamic),
        (embedding_ops, "_EMBEDDING_BYTE", Q.embedding_byte),
        (embedding_ops, "_EMBEDDING_BAG_BYTE", Q.embedding_bag_byte),
    ]


@contextlib.contextmanager
def bare_kernels() -> Iterator[None]:
    """Our modules call their kernels as plain ops (as before the bypass) inside the block."""
    slots = _kernel_slots()
    saved = [getattr(owner, name) for owner, name, _ in slots]
    try:
        for owner, name, op in slots:
            setattr(owner, name, op)
        yield
    finally:
        for (owner, name, _), value in zip(slots, saved, strict=True):
            setattr(owner, name, value)


_BARE_LOWERED = {kernels.linear: Q.linear.default, kernels.linear_relu: Q.linear_relu.default,
                 kernels.linear_dynamic: Q.linear_dynamic.default}


def bare_lowered(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of a lowered graph with its linear kernels called as plain ops."""
    gm = copy.deepcopy(gm)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _BARE_LOWERED:
            node.target = _BARE_LOWERED[node.target]
    gm.recompile()
    return gm


# ----------------------------------------------------------------------------- timing
def medians_us(variants: list[Variant], calls: int, repeats: int) -> list[float]:
    """Per-call thread CPU time of each variant (us): blocks of ``calls`` calls inside the
    variant's context, variants round-robin, median over ``repeats`` blocks."""
    times: list[list[float]] = [[] for _ in variants]
    with torch.no_grad():
        for fn, context in variants:
            with context():
                fn()
        for _ in range(repeats):
            for (fn, context), samples in zip(variants, times, strict=True):
                with context():
                    fn()
                    start = time.thread_time()
                    for _ in range(calls):
                        fn()
                    samples.append((time.thread_time() - start) / calls * 1e6)
    return [statistics.median(t) for t in times]


def row(name: str, variants: dict[str, Variant], calls: int, repeats: int) -> None:
    us = medians_us(list(variants.values()), calls, repeats)
    base = us[0]
    cells = "  ".join(f"{k} {v:9.1f} us ({v / base:4.2f}x)" for k, v in zip(variants, us, strict=True))
    print(f"{name:34s} {cells}", flush=True)


# ----------------------------------------------------------------------------- module kinds
def _q(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.quantize_per_tensor(torch.randn(shape, generator=g), 0.05, 128, torch.quint8)


def _qw(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.quantize_per_tensor(torch.randn(shape, generator=g) * 0.1, 0.004, 0, torch.qint8)


def _pair(ours: nn.Module, theirs: nn.Module, w: torch.Tensor, b: torch.Tensor | None) -> tuple[nn.Module, nn.Module]:
    for m in (ours, theirs):
        m.set_weight_bias(w, b)
        if hasattr(m, "scale"):
            m.scale, m.zero_point = 0.07, 120
    return ours, theirs


def module_cases() -> dict[str, tuple[nn.Module, nn.Module, tuple[Any, ...]]]:
    import torch.ao.nn.intrinsic.quantized as ao_nniq
    import torch.ao.nn.quantized as ao_nnq
    import torch.ao.nn.quantized.dynamic as ao_nnqd

    import fxquant.nn.intrinsic.quantized as nniq
    import fxquant.nn.quantized as nnq
    import fxquant.nn.quantized.dynamic as nnqd

    b16 = torch.randn(16)
    cases: dict[str, tuple[nn.Module, nn.Module, tuple[Any, ...]]] = {}
    w = _qw((16, 16, 3, 3), 1)
    cases["Conv2d 16x14x14 3x3"] = (*_pair(nnq.Conv2d(16, 16, 3, padding=1), ao_nnq.Conv2d(16, 16, 3, padding=1), w, b16),
                                   (_q((1, 16, 14, 14), 2),))
    cases["ConvReLU2d 16x14x14 3x3"] = (*_pair(nniq.ConvReLU2d(16, 16, 3, padding=1),
                                                ao_nniq.ConvReLU2d(16, 16, 3, padding=1), w, b16),
                                         (_q((1, 16, 14, 14), 2),))
    wd = _qw((64, 1, 3, 3), 3)
    cases["Conv2d depthwise 64x14x14"] = (*_pair(nnq.Conv2d(64, 64, 3, padding=1, groups=64),
                                                  ao_nnq.Conv2d(64, 64, 3, padding=1, groups=64), wd, torch.randn(64)),
                                           (_q((1, 64, 14, 14), 4),))
    wt = _qw((16, 8, 3, 3), 5)
    cases["ConvTranspose2d 16->8 14x14"] = (*_pair(nnq.ConvTranspose2d(16, 8, 3), ao_nnq.ConvTranspose2d(16, 8, 3),
                                                    wt, torch.randn(8)), (_q((1, 16, 14, 14), 6),))
    wl = _qw((64, 64), 7)
    cases["Linear 4x64->64"] = (*_pair(nnq.Linear(64, 64), ao_nnq.Linear(64, 64), wl, torch.randn(64)),
                                (_q((4, 64), 8),))
    cases["LinearReLU 4x64->64"] = (*_pair(nniq.LinearReLU(64, 64), ao_nniq.LinearReLU(64, 64), wl, torch.randn(64)),
                                    (_q((4, 64), 8),))
    wdyn = _qw((384, 384), 9)
    cases["dynamic Linear 8x384->384"] = (*_pair(nnqd.Linear(384, 384), ao_nnqd.Linear(384, 384), wdyn, torch.randn(384)),
                                          (torch.randn(8, 384),))
    ours_e, theirs_e = nnq.EmbeddingBag(1000, 32), ao_nnq.EmbeddingBag(1000, 32)
    we = torch.quantize_per_channel(torch.randn(1000, 32), torch.rand(1000) * 0.02 + 0.01,
                                    torch.zeros(1000), 0, torch.quint8)
    ours_e.set_weight(we)
    theirs_e.set_weight(we)
    cases["EmbeddingBag 1000x32, 20 ids"] = (ours_e, theirs_e, (torch.randint(0, 1000, (20,)), torch.tensor([0, 10])))
    return cases


def module_rows(calls: int, repeats: int) -> None:
    print("module kinds (per call):")
    for name, (ours, theirs, inputs) in module_cases().items():
        with torch.no_grad():
            mine, ref = ours(*inputs), theirs(*inputs)
            with bare_kernels():
                bare = ours(*inputs)
        same = torch.equal(mine.int_repr() if mine.is_quantized else mine, ref.int_repr() if ref.is_quantized else ref)
        same = same and torch.equal(mine.int_repr() if mine.is_quantized else mine,
                                    bare.int_repr() if bare.is_quantized else bare)
        row(f"{name}{'' if same else ' (OUTPUTS DIFFER)'}", {
            "ours bare": (lambda m=ours, i=inputs: m(*i), bare_kernels),
            "ours": (lambda m=ours, i=inputs: m(*i), contextlib.nullcontext),
            "upstream": (lambda m=theirs, i=inputs: m(*i), contextlib.nullcontext),
        }, calls, repeats)


# ----------------------------------------------------------------------------- models
def fx_quantized(model: nn.Module, example: tuple[torch.Tensor, ...], calibration: list[Any]) -> nn.Module:
    from fxquant.qconfig.default_mappings import get_default_qconfig_mapping
    from fxquant.quantize_fx import convert_fx, prepare_fx

    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
    speed.calibrate(prepared, calibration)
    return convert_fx(prepared)


def image_rows(repeats: int, quick: bool) -> None:
    from fxquant.zoo import efficientnet_lite0

    for name, model in (("EfficientNet-Lite0 FX int8", efficientnet_lite0()), ("ResNet-50 FX int8", speed.ResNet50())):
        w = speed.image_workload(name, model, quick=True)
        example = w.holdout(1)[0]
        ours = fx_quantized(w.model, example, w.calibration)
        theirs = speed.upstream_fx(w, example)
        row(f"{name} (batch 1)", {
            "ours bare": (lambda m=ours, x=example: m(*x), bare_kernels),
            "ours": (lambda m=ours, x=example: m(*x), contextlib.nullcontext),
            "upstream": (lambda m=theirs, x=example: m(*x), contextlib.nullcontext),
        }, 1 if name.startswith("ResNet") else 3, max(5, repeats // 3) if quick else repeats)


def minilm_rows(repeats: int) -> None:
    from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic

    import fxquant

    w = speed.minilm_workload(dynamic=True, quick=True)
    example = w.holdout(1)[0]
    ours = fxquant.quantize_dynamic(copy.deepcopy(w.model), {nn.Linear}, dtype=torch.qint8)
    theirs = ao_quantize_dynamic(copy.deepcopy(w.model), {nn.Linear}, dtype=torch.qint8)
    row("MiniLM-L6 quantize_dynamic (1x128)", {
        "ours bare": (lambda: ours(*example), bare_kernels),
        "ours": (lambda: ours(*example), contextlib.nullcontext),
        "upstream": (lambda: theirs(*example), contextlib.nullcontext),
    }, 3, repeats)
    lowered = lower_to_int8(speed.fxquant_converted(w, example))
    bare = bare_lowered(lowered)
    row("MiniLM-L6 PT2E dynamic lowered", {
        "bare": (lambda: bare(*example), contextlib.nullcontext),
        "kernels": (lambda: lowered(*example), contextlib.nullcontext),
    }, 3, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per variant (median)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats for the models")
    parser.add_argument("--only", default="modules,images,minilm", help="comma-separated row groups")
    args = parser.parse_args()
    torch.set_num_threads(1)
    groups = set(args.only.split(","))
    print(f"torch {torch.__version__}, 1 thread, engine {torch.backends.quantized.engine}, "
          f"thread CPU time, medians of {args.repeats} interleaved blocks; ratio vs the first column")
    if "modules" in groups:
        module_rows(calls=300, repeats=args.repeats)
    if "images" in groups:
        image_rows(args.repeats, args.quick)
    if "minilm" in groups:
        minilm_rows(max(5, args.repeats // 3) if args.quick else args.repeats)


if __name__ == "__main__":
    main()
