"""fxquant vs torchao PT2E int8 on MiniLM-L6, both compiled by Inductor: one command.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/compare_torchao.py \\
        [--modes static dynamic] [--batch 1 8] [--threads 1] [--repeats 30] [--control]

For each mode (static / dynamic activations) and batch size, ``benchmarks/speed.py``'s
recipe builds both models: X86InductorQuantizer with its default config, prepare_pt2e,
calibration on the same real text, convert_pt2e, then ``torch.compile`` (Inductor,
``freezing=True``) — once with fxquant, once with torchao 0.18. It prints

* time: both compiled models interleaved round-robin (each timed call follows an untimed
  call of the same model), median of ``--repeats``; thread CPU time (``time.thread_time``)
  with 1 thread — insensitive to other processes on a shared machine — wall time otherwise.
  ``--control`` builds every model twice (independent prepare/calibrate/convert/compile),
  so the spread between copies of the *same* recipe shows the noise floor of the ratio;
* the mean cosine of each model's sentence embeddings against fp32;
* the structural diff of the two converted graphs: node counts per op, per-user dequantize
  duplication, and the rows where the two differ;
* Inductor's output for each: generated C++ kernels, and each oneDNN int8 linear call with
  its output dtype and post-op (float-output / int8-output / fused add or GELU), counted.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch._inductor.config as inductor_config
from torch._inductor.graph import GraphLowering

from fxquant.metrics import mean_cosine

sys.path.insert(0, str(Path(__file__).parent))
import speed  # benchmarks/speed.py: the same workload, quantization and timing

warnings.filterwarnings("ignore")

_QLINEAR = re.compile(r"torch\.ops\.onednn\.(qlinear_pointwise(?:\.\w+)?)\((.*)\)\s*$")
_OUT_DTYPE_AND_POSTOP = re.compile(r"(torch\.(?:float32|bfloat16|uint8|int8)), (?:[-\d.e]+, -?\d+, )?'(\w+)'")
_KERNEL_DEF = re.compile(r"^(cpp_fused_\w+) = async_compile\.cpp", re.MULTILINE)
_EXTERN = re.compile(r"\b(extern_kernels\.\w+)\(")


@contextlib.contextmanager
def inductor_output_code() -> Iterator[list[str]]:
    """Collect the wrapper code of every graph Inductor compiles inside the block (without
    resetting Dynamo, so models compiled before stay compiled)."""
    codes: list[str] = []
    with mock.patch.object(GraphLowering, "save_output_code", codes.append):
        yield codes


def kernel_counts(codes: list[str]) -> Counter[str]:
    """What the compiled model calls per forward: C++ kernels, extern kernels and oneDNN int8
    linears by output dtype and post-op."""
    counts: Counter[str] = Counter()
    for code in codes:
        counts["cpp fused kernels"] += len(_KERNEL_DEF.findall(code))
        for line in code.splitlines():
            counts.update(_EXTERN.findall(line))
            m = _QLINEAR.search(line)
            if m is None:
                continue
            tail = _OUT_DTYPE_AND_POSTOP.search(m.group(2))
            out = f"-> {tail.group(1).removeprefix('torch.')} post-op {tail.group(2)}" if tail else ""
            counts[f"onednn.{m.group(1)} {out}".strip()] += 1
    return counts


def graph_counts(gm: torch.fx.GraphModule) -> Counter[str]:
    """Node counts per call_function target, plus the dequantize sharing."""
    counts: Counter[str] = Counter()
    for n in gm.graph.nodes:
        if n.op == "call_function":
            target = str(n.target)
            counts[target] += 1
            if "dequantize" in target and len(n.users) > 1:
                counts["(dequantize read by >1 node)"] += 1
        elif n.op in ("get_attr", "placeholder"):
            counts[f"({n.op})"] += 1
    return counts


def print_diff(title: str, ours: Counter[str], theirs: Counter[str], all_rows: bool) -> None:
    keys = sorted(set(ours) | set(theirs))
    differing = [k for k in keys if ours[k] != theirs[k]]
    print(f"  {title}: {sum(ours.values())} vs {sum(theirs.values())}, "
          f"{len(differing)} of {len(keys)} rows differ")
    for k in keys if all_rows else differing:
        mark = "" if ours[k] == theirs[k] else "  <-- differs"
        print(f"    {ours[k]:5d} {theirs[k]:5d}  {k}{mark}")


def build(w: speed.Workload, example: speed.Inputs, copies: int) -> tuple[dict[str, Callable[..., Any]],
                                                                          dict[str, list[str]]]:
    """``copies`` independent compiled builds of each recipe, and Inductor's code for the first."""
    fns: dict[str, Callable[..., Any]] = {}
    codes: dict[str, list[str]] = {}
    for i in range(copies):
        suffix = "" if i == 0 else f" #{i + 1}"
        with inductor_output_code() as ours_code:
            fns["fxquant" + suffix] = speed.compiled(speed.fxquant_converted(w, example), example)
        with inductor_output_code() as ao_code:
            ao = speed.torchao_int8(w, example)
        if ao is None:
            raise SystemExit("torchao is not installed: pip install 'fxquant[dev]' (torchao 0.18)")
        fns["torchao" + suffix] = ao
        if i == 0:
            codes = {"fxquant": ours_code, "torchao": ao_code}
    return fns, codes


def rows(dynamic: bool, batch: int, thread_counts: list[int], repeats: int, control: bool) -> None:
    w = speed.minilm_workload(dynamic, quick=False)
    example = w.holdout(batch)[0]
    all_cores = torch.get_num_threads()
    fns, codes = build(w, example, 2 if control else 1)
    names = list(fns)
    with torch.no_grad():
        reference = w.model(*example)
        cos = {n: mean_cosine(reference, fns[n](*example)) for n in names}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        ms = speed.medians_ms([lambda f=fns[n]: f(*example) for n in names], repeats, single_thread=threads == 1)
        clock = "thread CPU" if threads == 1 else "wall"
        print(f"\nMiniLM-L6 {'dynamic' if dynamic else 'static'}  batch {batch}  {threads} thread(s)  "
              f"({clock} time, interleaved, median of {repeats})")
        by_name = dict(zip(names, ms, strict=True))
        for n in names:
            ratio = by_name[n] / by_name["torchao"]
            print(f"  {n:12s} {by_name[n]:8.3f} ms  {ratio:6.3f}x torchao  cos {cos[n]:.4f}")
    torch.set_num_threads(all_cores)
    ours_graph = fns["fxquant"]._orig_mod  # torch.compile keeps the module it wraps
    ao_graph = fns["torchao"]._orig_mod
    print_diff("converted graphs (fxquant vs torchao), node counts", graph_counts(ours_graph),
               graph_counts(ao_graph), all_rows=False)
    print_diff("Inductor output (fxquant vs torchao), calls per forward", kernel_counts(codes["fxquant"]),
               kernel_counts(codes["torchao"]), all_rows=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=["static", "dynamic"], default=["static", "dynamic"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--control", action="store_true",
                        help="build each model twice: the spread between copies is the noise floor")
    args = parser.parse_args()
    inductor_config.freezing = True
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} cores")
    for mode in args.modes:
        for batch in args.batch:
            rows(mode == "dynamic", batch, args.threads, args.repeats, args.control)


if __name__ == "__main__":
    main()
