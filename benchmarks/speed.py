"""Speed of int8 models vs fp32 and vs upstream, in one process: one command, one table.

    PYTHONPATH=src python benchmarks/speed.py [--quick] [--models lite0,resnet50,minilm]
        [--threads 1 all] [--batch 1 8] [--repeats 20] [--profile]

Models: EfficientNet-Lite0 (``fxquant.zoo``, real ImageNet weights, real photo crops at
224x224), ResNet-50 (architecture defined below, random weights; torchvision is not needed),
MiniLM-L6 (real weights; batches of real text cut to 128-token sequences), the latter with
static and with dynamic int8 linears.

Variants (all calibrated on the same real data, measured on held-out data):
* ``fp32 eager``; ``fp32 BN-folded`` (``torch.fx.experimental.optimization.fuse``);
  ``fp32 compiled`` (``torch.compile`` with Inductor freezing);
* ``fxquant int8 eager``: PT2E (``X86InductorQuantizer``) -> ``convert_pt2e`` ->
  ``fxquant.lowering.lower_to_int8`` (torch's quantized CPU kernels, runs eagerly);
* ``fxquant int8 compiled``: ``torch.compile`` (freezing) of the ``convert_pt2e`` model
  (Inductor's x86 int8 passes + code generation);
* ``upstream FX int8``: ``torch.ao.quantization`` ``prepare_fx``/``convert_fx`` with the x86
  default qconfig mapping for image models, the x86 qconfig on linears only for MiniLM (as
  the X86 quantizer does), the dynamic qconfig on linears for the dynamic MiniLM row;
* ``torchao PT2E int8 compiled`` when ``import torchao`` works (a benchmark-only extra).

Timing: compile and first calls are excluded (warm-up); the variants of one row are run
round-robin on one held-out batch, ``--repeats`` times, and the median is reported, so that
load from other processes hits all of them alike. Single-threaded rows use the calling
thread's CPU time (``time.thread_time``, insensitive to other processes on a loaded machine); rows with all
cores use wall time (``time.perf_counter``). Ratios: ``x best fp32`` is the best fp32
variant's time over this variant's (higher is faster), ``x upstream`` the same against
upstream FX int8. Accuracy columns compare each variant's output with fp32 eager: top-1
agreement and logit SQNR for image models, mean cosine of sentence embeddings for MiniLM.
They are computed once per variant (all cores, outside the timed loop) over the whole
held-out set, larger than the timed batch: 256 photo crops (distinct random crops of the
zoo's 8 photos; ``--quick``: 16) and MiniLM sequences packed from every held-out sentence
(each used once: 32 sequences of 128 tokens; ``--quick``: 8). The number of
samples is printed under each table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch._inductor.config as inductor_config
from torch import nn

from fxquant.lowering import lower_to_int8
from fxquant.metrics import mean_cosine, sqnr, top1_agreement
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

warnings.filterwarnings("ignore")
Inputs = tuple[torch.Tensor, ...]


# ----------------------------------------------------------------------------- ResNet-50
class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.downsample(x))


class ResNet50(nn.Module):
    """torchvision's ResNet-50 v1.5 layout (stride in the 3x3 conv), random weights."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        blocks, cin = [], 64
        for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class Workload:
    name: str
    model: nn.Module
    calibration: list[Inputs]
    holdout: Callable[[int], list[Inputs]]  # batch size -> held-out batches
    kind: str  # "logits" or "embedding"
    dynamic: bool = False


def image_workload(name: str, model: nn.Module, quick: bool) -> Workload:
    from fxquant.zoo import imagenet_photos

    calibration = imagenet_photos(8 if quick else 32, split="calibration")
    # accuracy needs many samples (a 64-photo top-1 agreement moves 1.6 points per photo);
    # timing uses only the first batch
    holdout = imagenet_photos(16 if quick else 256, split="holdout")
    return Workload(
        name=name, model=model.eval(), kind="logits",
        calibration=[(b,) for b in calibration.split(8)],
        holdout=lambda batch: [(b,) for b in holdout.split(batch) if len(b) == batch],
    )


def minilm_workload(dynamic: bool, quick: bool) -> Workload:
    from fxquant.zoo import minilm_l6, minilm_tokenizer, real_sentences
    from fxquant.zoo.sentences import sentence_pool

    tokenizer = minilm_tokenizer()

    def sequences(n: int, split: str, seed: int) -> Inputs:
        # real text: consecutive sentences joined until each sequence has 128 tokens
        text = real_sentences(n * 12, split=split, seed=seed)
        docs = [" ".join(text[i * 12:(i + 1) * 12]) for i in range(n)]
        return tokenizer.encode(docs, max_length=128)

    held = tokenizer.encode_packed(real_sentences(len(sentence_pool("holdout")), split="holdout"))
    if quick:
        held = tuple(t[:8] for t in held)
    return Workload(
        name=f"MiniLM-L6 {'dynamic' if dynamic else 'static'}", model=minilm_l6().eval(),
        kind="embedding", dynamic=dynamic,
        calibration=[sequences(8, "calibration", s) for s in range(1 if quick else 4)],
        holdout=lambda batch: [tuple(t[i:i + batch] for t in held)
                               for i in range(0, len(held[0]) - batch + 1, batch)],
    )


# ----------------------------------------------------------------------------- variants
def calibrate(model: Callable[..., Any], batches: list[Inputs]) -> None:
    with torch.no_grad():
        for inputs in batches:
            model(*inputs)


def rebatched(batches: list[Inputs], size: int) -> list[Inputs]:
    """The same samples in batches of ``size`` (exported graphs are shape-specialised)."""
    merged = [torch.cat(parts) for parts in zip(*batches, strict=True)]
    return [tuple(t[i:i + size] for t in merged) for i in range(0, len(merged[0]) - size + 1, size)]


def fxquant_converted(w: Workload, example: Inputs) -> torch.fx.GraphModule:
    quantizer = X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_dynamic=w.dynamic)
    )
    gm = prepare_pt2e(torch.export.export(w.model, example).module(), quantizer)
    calibrate(gm, rebatched(w.calibration, len(example[0])))
    return convert_pt2e(gm)


def upstream_fx(w: Workload, example: Inputs) -> nn.Module:
    from torch.ao.quantization import (
        QConfigMapping,
        default_dynamic_qconfig,
        get_default_qconfig,
        get_default_qconfig_mapping,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if w.dynamic:
        mapping = QConfigMapping().set_object_type(nn.Linear, default_dynamic_qconfig)
    elif w.kind == "embedding":  # linears only, as X86InductorQuantizer does for transformers
        mapping = QConfigMapping().set_object_type(nn.Linear, get_default_qconfig("x86"))
    else:
        mapping = get_default_qconfig_mapping("x86")
    prepared = prepare_fx(copy.deepcopy(w.model), mapping, example)
    calibrate(prepared, w.calibration)
    return convert_fx(prepared)


def compiled(model: nn.Module, example: Inputs) -> Callable[..., Any]:
    fn = torch.compile(model)
    with torch.no_grad():
        fn(*example)  # compile now, outside the timed loop
    return fn


def torchao_int8(w: Workload, example: Inputs) -> Callable[..., Any] | None:
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e as ao_convert
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e as ao_prepare
    except ImportError:
        return None
    quantizer = xiq.X86InductorQuantizer().set_global(
        xiq.get_default_x86_inductor_quantization_config(is_dynamic=w.dynamic)
    )
    gm = ao_prepare(torch.export.export(w.model, example).module(), quantizer)
    calibrate(gm, rebatched(w.calibration, len(example[0])))
    return compiled(ao_convert(gm), example)


def build_variants(w: Workload, example: Inputs) -> dict[str, Callable[..., Any]]:
    """Every variant, prepared for inputs shaped like ``example``."""
    variants: dict[str, Callable[..., Any]] = {"fp32 eager": w.model}
    try:
        variants["fp32 BN-folded"] = torch.fx.experimental.optimization.fuse(copy.deepcopy(w.model))
    except Exception as e:  # noqa: BLE001  (benchmark: report any tracing failure and go on)
        print(f"  [{w.name}] fp32 BN-folded skipped: {type(e).__name__}: {str(e)[:80]}")
    variants["fp32 compiled"] = compiled(copy.deepcopy(w.model), example)
    converted = fxquant_converted(w, example)
    variants["fxquant int8 eager"] = lower_to_int8(converted)
    variants["fxquant int8 compiled"] = compiled(converted, example)
    try:
        variants["upstream FX int8"] = upstream_fx(w, example)
    except Exception as e:  # noqa: BLE001
        print(f"  [{w.name}] upstream FX int8 skipped: {type(e).__name__}: {str(e)[:80]}")
    ao = torchao_int8(w, example)
    if ao is not None:
        variants["torchao PT2E int8 compiled"] = ao
    return variants


# ----------------------------------------------------------------------------- measuring
def medians_ms(fns: list[Callable[[], Any]], repeats: int, single_thread: bool) -> list[float]:
    """Median time of each function, round-robin; each timed call follows an untimed call of
    the same function (the first call after another model's refills the caches)."""
    clock = time.thread_time if single_thread else time.perf_counter
    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for fn in fns:
            fn()
        for _ in range(repeats):
            for fn, samples in zip(fns, times, strict=True):
                fn()
                start = clock()
                fn()
                samples.append((clock() - start) * 1e3)
    return [statistics.median(t) for t in times]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accuracy:
    """Each variant's accuracy column and what it was measured on."""

    columns: dict[str, str]  # variant name -> column text
    samples: int  # held-out samples (photos / sequences) each figure is over
    batch: int

    def footnote(self, w: Workload) -> str:
        what = "photo crops" if w.kind == "logits" else "sequences of 128 tokens"
        figures = "top-1 agreement, logit SQNR" if w.kind == "logits" else "embedding cosine"
        return (f"  accuracy ({figures} vs fp32 eager): {self.samples} held-out {what} per figure, "
                f"in {self.samples // self.batch} batches of {self.batch}; timing: the first batch")


def accuracy(w: Workload, fn: Callable[..., Any], batches: list[Inputs], reference: torch.Tensor) -> str:
    """One variant's accuracy column: its outputs on ``batches`` against ``reference``."""
    with torch.no_grad():
        out = torch.cat([fn(*b) for b in batches])
    if w.kind == "embedding":
        return f"cos {mean_cosine(reference, out):.4f}"
    return f"top1 {top1_agreement(reference, out):6.1%} {sqnr(reference, out):5.1f} dB"


def accuracies(w: Workload, variants: dict[str, Callable[..., Any]], batch: int) -> Accuracy:
    """Every variant's accuracy on the whole held-out set, once (not per timed row)."""
    batches = w.holdout(batch)
    with torch.no_grad():
        reference = torch.cat([w.model(*b) for b in batches])
    columns = {name: accuracy(w, fn, batches, reference) for name, fn in variants.items()}
    return Accuracy(columns=columns, samples=reference.shape[0], batch=batch)


def run_row(w: Workload, batch: int, variants: dict[str, Callable[..., Any]], threads: int,
            repeats: int, acc: Accuracy) -> None:
    torch.set_num_threads(threads)
    example = w.holdout(batch)[0]
    names = list(variants)
    ms = medians_ms([lambda fn=variants[n]: fn(*example) for n in names], repeats, threads == 1)
    best_fp32 = min(t for n, t in zip(names, ms, strict=True) if n.startswith("fp32"))
    upstream = dict(zip(names, ms, strict=True)).get("upstream FX int8")
    clock = "thread CPU time" if threads == 1 else "wall time"
    print(f"\n{w.name}  batch {batch}  threads {threads}  ({clock}, median of {repeats})")
    for name, t in zip(names, ms, strict=True):
        vs_up = f"{upstream / t:5.2f}x" if upstream else "   - "
        print(f"  {name:28s} {t:9.2f} ms  {best_fp32 / t:5.2f}x best fp32  {vs_up} upstream  "
              f"{acc.columns[name]}")
    print(acc.footnote(w))


def node_times_ms(gm: torch.fx.GraphModule, inputs: Inputs, repeats: int) -> dict[torch.fx.Node, float]:
    """Median thread CPU time of every call_function node of ``gm``, run node by node."""
    times: dict[torch.fx.Node, list[float]] = {}

    class Timed(torch.fx.Interpreter):
        def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
            start = time.thread_time()
            out = target(*args, **kwargs)
            times.setdefault(self._node, []).append((time.thread_time() - start) * 1e3)
            return out

        def run_node(self, n: torch.fx.Node) -> Any:
            self._node = n
            return super().run_node(n)

    with torch.no_grad():
        for _ in range(3):
            Timed(gm).run(*inputs)
        times.clear()
        for _ in range(repeats):
            Timed(gm).run(*inputs)
    return {n: statistics.median(t) for n, t in times.items()}


def _shape_of(value: object) -> str:
    return "x".join(map(str, value.shape)) if isinstance(value, torch.Tensor) else ""


def profile_lite0(quick: bool) -> None:
    """Where the time of fxquant int8 (eager lowering) EfficientNet-Lite0 goes at batch 1, one
    thread: the median thread CPU time of each node of the lowered graph (run node by node),
    summed per kernel, and the slowest nodes with their input shapes."""
    from fxquant.zoo import efficientnet_lite0

    torch.set_num_threads(1)
    w = image_workload("EfficientNet-Lite0", efficientnet_lite0(), quick)
    example = w.holdout(1)[0]
    lowered = lower_to_int8(fxquant_converted(w, example))
    per_node = node_times_ms(lowered, example, 10 if quick else 30)
    whole = medians_ms([lambda: lowered(*example)], 10 if quick else 30, True)[0]
    per_kernel: dict[str, list[float]] = {}
    for node, ms in per_node.items():
        per_kernel.setdefault(getattr(node.target, "__name__", str(node.target)), []).append(ms)
    total = sum(per_node.values())
    print(f"\nfxquant int8 eager EfficientNet-Lite0, batch 1, 1 thread: {whole:.2f} ms per call, "
          f"{total:.2f} ms in {len(per_node)} kernel calls (thread CPU time, medians)")
    for name, ms in sorted(per_kernel.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {name:52s} {sum(ms):6.2f} ms {sum(ms) / total:6.1%}  {len(ms):3d} calls")
    print("  slowest calls:")
    shapes: dict[torch.fx.Node, str] = {}

    class Shapes(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            first = n.args[0] if n.args else None
            shapes[n] = _shape_of(self.env.get(first)) if isinstance(first, torch.fx.Node) else ""
            return out

    with torch.no_grad():
        Shapes(lowered).run(*example)
    for node, ms in sorted(per_node.items(), key=lambda kv: -kv[1])[:12]:
        name = getattr(node.target, "__name__", str(node.target))
        print(f"    {ms * 1e3:7.1f} us  {name:36s} input {shapes.get(node, '')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Lite0 and MiniLM static, batch 1, "
                        "1 thread, few repeats (smoke run, < 3 min)")
    parser.add_argument("--models", default="lite0,resnet50,minilm")
    parser.add_argument("--threads", nargs="+", default=["1", "all"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="also print where the time of "
                        "fxquant int8 EfficientNet-Lite0 goes at batch 1, 1 thread (per kernel)")
    args = parser.parse_args()
    inductor_config.freezing = True
    torch.manual_seed(0)
    all_cores = torch.get_num_threads()
    models, threads, batches, repeats = args.models.split(","), args.threads, args.batch, args.repeats
    if args.quick:
        models, threads, batches, repeats = ["lite0", "minilm"], ["1"], [1], min(repeats, 5)
    print(f"torch {torch.__version__}, {all_cores} cores, quantized engine "
          f"{torch.backends.quantized.engine}")
    workloads: list[Callable[[], Workload]] = []
    if "lite0" in models:
        from fxquant.zoo import efficientnet_lite0

        workloads.append(lambda: image_workload("EfficientNet-Lite0", efficientnet_lite0(), args.quick))
    if "resnet50" in models:
        workloads.append(lambda: image_workload("ResNet-50", ResNet50(), args.quick))
    if "minilm" in models:
        workloads.append(lambda: minilm_workload(False, args.quick))
        if not args.quick:
            workloads.append(lambda: minilm_workload(True, args.quick))
    for make in workloads:
        w = make()
        for batch in batches:
            torch.set_num_threads(all_cores)
            variants = build_variants(w, w.holdout(batch)[0])
            acc = accuracies(w, variants, batch)  # all cores, once per variant
            for n_threads in threads:
                run_row(w, batch, variants, all_cores if n_threads == "all" else int(n_threads), repeats, acc)
    if args.profile:
        profile_lite0(args.quick)


if __name__ == "__main__":
    main()
