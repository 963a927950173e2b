"""Where MiniLM-L6 int8 time goes, and what the transformer lowering rules buy: one command.

    PYTHONPATH=src python benchmarks/minilm_speed.py [--batch 1 8] [--dynamic] [--kernels]
        [--repeats 9]

* model rows (1 thread, 128-token batches of real text, ``benchmarks/speed.py``'s
  construction): fp32 eager and compiled (Inductor, freezing); fxquant int8 eager without the transformer rules (the fused
  attention, the oneDNN GEMMs and their GELU / add fusions all off: fbgemm kernels, the float
  attention ops) and with them; ratios side by side from one run, plus the mean
  sentence-embedding cosine against fp32. Then a per-op profile of the int8 model (thread
  CPU time of each graph node, summed per op and input shape).
* ``--kernels``: the float-output int8 GEMMs at MiniLM's shapes (128 and 1024 rows):
  fbgemm's fp32-output linear and dynamic linear, oneDNN's ``qlinear_pointwise`` (+ its
  input quantize), and a ``torch._int_mm`` linear with per-row dynamic activation scales.

Timing: ``time.thread_time`` (CPU time of the calling thread, insensitive to other processes
on a loaded machine), variants interleaved round-robin, median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config as inductor_config

from fxquant.lowering import lower_to_int8
from fxquant.lowering.rules import linear as linear_rules
from fxquant.lowering.table import INT8_RULES
from fxquant.metrics import mean_cosine

sys.path.insert(0, str(Path(__file__).parent))
import speed  # benchmarks/speed.py: the same workload and quantization

warnings.filterwarnings("ignore")
TRANSFORMER_RULES = {"attention", "linear_gelu_float_out", "linear_add_float_out"}


def medians_ms(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """speed.py's round-robin thread-CPU medians (one thread)."""
    return speed.medians_ms(fns, repeats, single_thread=True)


def without_transformer_rules(converted: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The lowering before these rules: fbgemm GEMMs, attention and GELU / add in float."""
    rules = tuple(r for r in INT8_RULES if r.name not in TRANSFORMER_RULES)
    saved = linear_rules.HAS_ONEDNN_LINEAR
    linear_rules.HAS_ONEDNN_LINEAR = False  # float-output linears back on fbgemm
    try:
        return lower_to_int8(converted, rules=rules)
    finally:
        linear_rules.HAS_ONEDNN_LINEAR = saved


def per_op_profile(gm: torch.fx.GraphModule, example: tuple[torch.Tensor, ...], calls: int = 5) -> None:
    acc: dict[tuple[str, str], list[float]] = defaultdict(list)

    class Timed(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            start = time.thread_time()
            result = super().run_node(n)
            first = n.args[0] if n.args else None
            val = first.meta.get("val") if isinstance(first, torch.fx.Node) else None
            shape = str(tuple(val.shape)) if isinstance(val, torch.Tensor) else ""
            name = getattr(n.target, "__name__", str(n.target)) if n.op == "call_function" else str(n.target)
            acc[(name, shape)].append(time.thread_time() - start)
            return result

    with torch.no_grad():
        for _ in range(calls):
            Timed(gm).run(*example)
    total = sum(sum(v) for v in acc.values()) / calls
    print(f"  per-op profile (thread CPU time per call, {calls} calls, total {total * 1e3:.2f} ms):")
    for (name, shape), samples in sorted(acc.items(), key=lambda kv: -sum(kv[1]))[:14]:
        ms = sum(samples) / calls * 1e3
        print(f"    {ms:7.2f} ms {ms / total / 10:5.1f}%  x{len(samples) // calls:<3d} {name} {shape}")


def model_rows(dynamic: bool, batch: int, repeats: int) -> None:
    w = speed.minilm_workload(dynamic, quick=True)
    example = w.holdout(batch)[0]
    converted = speed.fxquant_converted(w, example)
    variants = {
        "fp32 eager": w.model,
        "fp32 compiled": speed.compiled(copy.deepcopy(w.model), example),
        "int8 eager, before (fbgemm, float attention)": without_transformer_rules(converted),
        "int8 eager, transformer rules": lower_to_int8(converted),
    }
    torch.set_num_threads(1)
    ms = medians_ms([lambda f=f: f(*example) for f in variants.values()], repeats)
    with torch.no_grad():
        reference = w.model(*example)
        cosines = [mean_cosine(reference, f(*example)) for f in variants.values()]
    print(f"\nMiniLM-L6 {'dynamic' if dynamic else 'static'}  batch {batch}  1 thread "
          f"(thread CPU time, median of {repeats})")
    best_fp32, before = min(ms[:2]), ms[2]
    for (name, t), cos in zip(zip(variants, ms, strict=True), cosines, strict=True):
        print(f"  {name:46s} {t:8.2f} ms  {best_fp32 / t:5.2f}x best fp32  {before / t:5.2f}x before  cos {cos:.4f}")
    per_op_profile(variants["int8 eager, transformer rules"], example)


def kernel_rows(repeats: int) -> None:
    q = torch.ops.quantized
    torch.set_num_threads(1)
    print("\nfloat-output int8 GEMMs (ms, 1 thread, thread CPU time)")
    print(f"  {'rows x in x out':18s} {'fbgemm fp32-out':>16s} {'oneDNN+quantize':>16s} "
          f"{'fbgemm dynamic':>15s} {'_int_mm dynamic':>16s}")
    for rows in (128, 1024):
        for k, n in ((384, 384), (384, 1536), (1536, 384)):
            torch.manual_seed(0)
            x, w, bias = torch.randn(rows, k), torch.randn(n, k) * 0.05, torch.randn(n)
            scales = w.abs().amax(1) / 127
            w8 = torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8)
            packed = q.linear_prepack(
                torch._make_per_channel_quantized_tensor(w8, scales.double(), torch.zeros(n, dtype=torch.long), 0), bias)
            onednn = linear_rules.OneDNNLinearWeight(weight=w8, scales=scales, bias=bias)
            w8t = w8.t().contiguous()

            def int_mm(x: torch.Tensor = x, w8t: torch.Tensor = w8t, scales: torch.Tensor = scales,
                       bias: torch.Tensor = bias) -> torch.Tensor:
                row_scale = x.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127
                xq = torch.round(x / row_scale).to(torch.int8)
                return torch.addcmul(bias, torch._int_mm(xq, w8t).float(), row_scale * scales)

            fns = [
                lambda x=x, packed=packed: q.linear_with_input_q_dq_qweight_dq_output_fp32(x, 0.03, 128, packed),
                lambda x=x, onednn=onednn: linear_rules.onednn_linear(
                    torch.quantize_per_tensor(x, 0.03, 128, torch.quint8), onednn),
                lambda x=x, packed=packed: q.linear_dynamic(x, packed, False),
                int_mm,
            ]
            ms = medians_ms(fns, repeats)
            print(f"  {rows:5d} x {k:4d} x {n:4d} " + " ".join(f"{t:16.3f}" for t in ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--dynamic", action="store_true", help="dynamic int8 linears")
    parser.add_argument("--kernels", action="store_true", help="also the GEMM kernel table")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    inductor_config.freezing = True
    torch.manual_seed(0)
    for batch in args.batch:
        model_rows(args.dynamic, batch, args.repeats)
    if args.kernels:
        kernel_rows(args.repeats)


if __name__ == "__main__":
    main()
