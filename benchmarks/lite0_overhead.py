"""Where the per-call time of int8 EfficientNet-Lite0 at batch 1 goes: one command.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/lite0_overhead.py [--repeats 60] [--no-fp32]

* model rows (1 thread, ``benchmarks/speed.py``'s construction: X86InductorQuantizer,
  convert_pt2e, ``lower_to_int8``): fp32 ``torch.compile`` with Inductor's freezing, as
  speed.py compiles it (unless ``--no-fp32``), the int8
  lowering as it is, and the same graph with its convolutions called as bare ops
  (``torch.ops.quantized.conv2d[_relu].new``, ``conv2d_add`` under the engine property), as
  the lowering emitted them before: ratios side by side from one run.
* per-kernel table of the lowered graph: each node's thread CPU time run node by node
  (median), next to oneDNN's own execution time for it (from its verbose log, one run):
  the difference is the per-call overhead outside the convolution kernels (Python, the
  dispatcher, output allocation, oneDNN argument setup).

Timing: ``time.thread_time`` (CPU time of the calling thread, insensitive to other processes
on a loaded machine), variants interleaved round-robin, median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config as inductor_config

from fxquant.lowering import kernels, lower_to_int8

sys.path.insert(0, str(Path(__file__).parent))
import speed  # benchmarks/speed.py: the same workload and quantization

warnings.filterwarnings("ignore")
Q = torch.ops.quantized


def _bare_conv_add(op: Any) -> Callable[..., torch.Tensor]:
    def call(x: torch.Tensor, y: torch.Tensor, packed: object, scale: float, zero_point: int) -> torch.Tensor:
        with kernels.onednn_engine():
            return op(x, y, packed, scale, zero_point)  # type: ignore[no-any-return]

    return call


BARE_OPS = {
    kernels.conv2d: Q.conv2d.new,
    kernels.conv2d_relu: Q.conv2d_relu.new,
    kernels.conv2d_add: _bare_conv_add(Q.conv2d_add.default),
    kernels.conv2d_add_relu: _bare_conv_add(Q.conv2d_add_relu.default),
}


def with_bare_ops(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of the lowered graph calling the convolutions as bare torch ops."""
    copied = copy.deepcopy(gm)
    for node in copied.graph.nodes:
        if node.op == "call_function" and node.target in BARE_OPS:
            node.target = BARE_OPS[node.target]
    copied.recompile()
    return copied


@contextlib.contextmanager
def stdout_to(path: str) -> Iterator[None]:
    """Send file descriptor 1 (where oneDNN's verbose log goes) to ``path`` inside the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def onednn_times_us(gm: torch.fx.GraphModule, x: torch.Tensor) -> dict[torch.fx.Node, float]:
    """oneDNN's execution time of each node's primitives (verbose log of one run)."""
    offsets: dict[torch.fx.Node, int] = {}

    class Marked(torch.fx.Interpreter):
        def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
            out = target(*args, **kwargs)
            offsets[self._node] = os.lseek(1, 0, os.SEEK_CUR)
            return out

        def run_node(self, n: torch.fx.Node) -> Any:
            self._node = n
            return super().run_node(n)

    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "onednn.log")
        with torch.no_grad(), stdout_to(log):
            torch._C._verbose.mkldnn_set_verbose(1)
            try:
                Marked(gm).run(x)
            finally:
                torch._C._verbose.mkldnn_set_verbose(0)
        text = Path(log).read_text()
    result, start = {}, 0
    for node, end in offsets.items():
        lines = text[start:end].splitlines()
        result[node] = sum(float(line.rsplit(",", 1)[1]) * 1e3 for line in lines if ",exec," in line)
        start = end
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--no-fp32", action="store_true", help="skip the fp32 torch.compile row")
    args = parser.parse_args()
    inductor_config.freezing = True  # as benchmarks/speed.py compiles the fp32 model
    torch.set_num_threads(1)
    from fxquant.zoo import efficientnet_lite0

    w = speed.image_workload("EfficientNet-Lite0", efficientnet_lite0(), quick=False)
    (x,) = w.holdout(1)[0]
    lowered = lower_to_int8(speed.fxquant_converted(w, (x,)))
    bare = with_bare_ops(lowered)
    with torch.no_grad():
        assert torch.equal(lowered(x), bare(x)), "the bare-op graph must compute the same values"
    variants: dict[str, Callable[[], Any]] = {}
    if not args.no_fp32:
        fp32 = speed.compiled(copy.deepcopy(w.model), (x,))
        variants["fp32 torch.compile"] = lambda: fp32(x)
    variants["int8, convs as bare ops"] = lambda: bare(x)
    variants["int8 lowering"] = lambda: lowered(x)
    ms = speed.medians_ms(list(variants.values()), args.repeats, single_thread=True)
    best_fp32 = ms[0] if not args.no_fp32 else None
    print(f"\nEfficientNet-Lite0, batch 1, 1 thread (thread CPU time, medians of {args.repeats}, interleaved)")
    for (name, _), t in zip(variants.items(), ms, strict=True):
        ratio = f"  {best_fp32 / t:5.2f}x vs fp32 compiled" if best_fp32 else ""
        print(f"  {name:28s} {t:7.3f} ms{ratio}")

    per_node = {n: t * 1e3 for n, t in speed.node_times_ms(lowered, (x,), args.repeats).items()}  # µs
    onednn = onednn_times_us(lowered, x)
    rows: dict[str, list[float]] = {}
    for node, us in per_node.items():
        row = rows.setdefault(getattr(node.target, "__name__", str(node.target)), [0, 0.0, 0.0])
        row[0] += 1
        row[1] += us
        row[2] += onednn.get(node, 0.0)
    total, kernel = sum(r[1] for r in rows.values()), sum(r[2] for r in rows.values())
    print(f"\nper kernel, run node by node: {total / 1e3:.2f} ms in {len(per_node)} calls, of which "
          f"oneDNN executes {kernel / 1e3:.2f} ms (one verbose run)")
    print(f"  {'kernel':34s} {'calls':>5s} {'total us':>9s} {'oneDNN us':>10s} {'overhead/call us':>17s}")
    for name, (calls, us, dnn) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:34s} {int(calls):5d} {us:9.1f} {dnn:10.1f} {(us - dnn) / calls:17.1f}")


if __name__ == "__main__":
    main()
