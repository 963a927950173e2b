"""Int8 attention matmuls on MiniLM-L6 vs the fused float attention: one command.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/int8_attention.py [--batch 1 8] [--repeats 9]
        [--profile]

Rows (1 thread, 128-token batches of real text, ``benchmarks/speed.py``'s workload and
calibration), timed in one interleaved run:

* fp32 eager and fp32 compiled (Inductor, freezing);
* fxquant int8 eager, default recipe: int8 linears, float attention fused into one
  ``scaled_dot_product_attention`` (``lowering/rules/matmul.py``);
* fxquant int8 eager with the opt-in matmul annotation
  (``set_function_type_qconfig(torch.matmul, config)``), lowered by the default table: the
  quantized matmuls stay in their reference form (dequantize + float matmul);
* the same with ``INT8_MATMUL_RULES``: both attention products on ``torch._int_mm``.

Each row prints its median time, the speed-up over the best fp32 variant and over the
default int8 model, and the mean sentence-embedding cosine against fp32 (all held-out
batches). Then the attention block alone, per layer: the fused float attention vs the int8
kernel on the same layer-0 inputs; with ``--profile`` the per-op profiles of the default and
the int8-attention models (``benchmarks/minilm_speed.py``'s).

Timing: ``time.thread_time`` (CPU time of the calling thread; the machine is shared),
variants interleaved round-robin, median of ``--repeats`` (``speed.medians_ms``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config as inductor_config

from fxquant.lowering import lower_to_int8
from fxquant.lowering.rules.int8_matmul import INT8_MATMUL_RULES
from fxquant.lowering.table import INT8_RULES
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

sys.path.insert(0, str(Path(__file__).parent))
import speed  # benchmarks/speed.py: the same workload and calibration

warnings.filterwarnings("ignore")
A = torch.ops.aten


def converted(w: speed.Workload, example: speed.Inputs, *, int8_matmul: bool) -> torch.fx.GraphModule:
    """speed.py's static X86 recipe; with ``int8_matmul`` the matmuls are quantized too."""
    config = get_default_x86_inductor_quantization_config()
    quantizer = X86InductorQuantizer().set_global(config)
    if int8_matmul:
        quantizer.set_function_type_qconfig(torch.matmul, config)
    gm = prepare_pt2e(torch.export.export(w.model, example).module(), quantizer)
    speed.calibrate(gm, speed.rebatched(w.calibration, len(example[0])))
    return convert_pt2e(gm)


def attention_inputs(gm: torch.fx.GraphModule, target: Any, example: speed.Inputs) -> tuple[Any, ...]:
    """The arguments of the first call of ``target`` in ``gm`` when run on ``example``."""
    captured: list[tuple[Any, ...]] = []

    class Capture(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            if n.target is target and not captured:
                captured.append(tuple(self.map_nodes_to_values(n.args, n)))  # type: ignore[arg-type]  # args of a call
                captured.append(self.map_nodes_to_values(n.kwargs, n))  # type: ignore[arg-type]  # kwargs of a call
            return super().run_node(n)

    with torch.no_grad():
        Capture(gm).run(*example)
    if not captured:
        raise RuntimeError(f"the lowered model calls no {target}: nothing to time")
    return tuple(captured)


def model_rows(batch: int, repeats: int, profile: bool) -> None:
    w = speed.minilm_workload(False, quick=True)
    batches = w.holdout(batch)
    example = batches[0]
    opt_in = converted(w, example, int8_matmul=True)
    default = lower_to_int8(converted(w, example, int8_matmul=False))
    int8_attn = lower_to_int8(opt_in, rules=(*INT8_RULES, *INT8_MATMUL_RULES))
    variants = {
        "fp32 eager": w.model,
        "fp32 compiled": speed.compiled(copy.deepcopy(w.model), example),
        "fxquant int8 eager, default (float SDPA)": default,
        "fxquant int8 eager, opt-in matmul, reference": lower_to_int8(opt_in),
        "fxquant int8 eager, opt-in matmul, int8 attention": int8_attn,
    }
    torch.set_num_threads(1)
    ms = speed.medians_ms([lambda f=f: f(*example) for f in variants.values()], repeats, single_thread=True)
    with torch.no_grad():
        reference = torch.cat([w.model(*b) for b in batches])
    print(f"\nMiniLM-L6 static  batch {batch}  1 thread (thread CPU time, median of {repeats}, interleaved)")
    best_fp32, base = min(ms[:2]), ms[2]
    for (name, fn), t in zip(variants.items(), ms, strict=True):
        acc = speed.accuracy(w, fn, batches, reference)
        print(f"  {name:52s} {t:8.2f} ms  {best_fp32 / t:5.2f}x best fp32  {base / t:5.2f}x default  {acc}")

    # the attention block of layer 0 alone, on the inputs the two models give it
    from fxquant.lowering.rules.int8_matmul import int8_attention

    sdpa_args, sdpa_kwargs = attention_inputs(default, A.scaled_dot_product_attention.default, example)
    int8_args, _ = attention_inputs(int8_attn, int8_attention, example)
    kernels = [lambda: A.scaled_dot_product_attention.default(*sdpa_args, **sdpa_kwargs),
               lambda: int8_attention(*int8_args)]
    sdpa_ms, int8_ms = speed.medians_ms(kernels, repeats, single_thread=True)
    print(f"  one layer's attention: fused float SDPA {sdpa_ms:.3f} ms, int8 attention {int8_ms:.3f} ms "
          f"({sdpa_ms / int8_ms:.2f}x)")
    if profile:
        import minilm_speed

        for name in ("fxquant int8 eager, default (float SDPA)", "fxquant int8 eager, opt-in matmul, int8 attention"):
            print(f"  {name}:")
            minilm_speed.per_op_profile(variants[name], example)  # type: ignore[arg-type]  # lowered GraphModules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--profile", action="store_true", help="per-op profiles of the two int8 models")
    args = parser.parse_args()
    inductor_config.freezing = True
    torch.manual_seed(0)
    for batch in args.batch:
        model_rows(batch, args.repeats, args.profile)


if __name__ == "__main__":
    main()
