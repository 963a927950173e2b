"""Observer benchmark: fxquant against upstream torch.ao.quantization, side by side.

    PYTHONPATH=src python benchmarks/observers.py [--runs N] [--histogram-only]

Single-threaded (``torch.set_num_threads(1)``) so the numbers do not depend on how many
cores are free. Times are the CPU time of that one thread (``time.thread_time``), so that other
processes on a busy machine do not count; each is the median over blocks of back-to-back
calls, alternating ours and upstream's (see :func:`blocked`). Prints four tables:

1. HistogramObserver time per ``forward`` on 1M-element activations (steady state: the same
   observer keeps seeing batches from the same distribution) and per ``calculate_qparams``.
2. HistogramObserver ``calculate_qparams`` time on real EfficientNet-Lite0 activations.
3. L2 quantization error, ours / upstream, on EfficientNet-Lite0 activations of real photos:
   on the calibration batches themselves and on held-out photos.
4. Per-forward overhead of MinMaxObserver and PerChannelMinMaxObserver.

``--runs N`` repeats the two HistogramObserver speed tables N times (on a shared machine the
ratios move by 10-20% from run to run); ``--histogram-only`` skips tables 3 and 4.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.ao.quantization as tq

from fxquant.observers.histogram import HistogramObserver
from fxquant.observers.minmax import MinMaxObserver, PerChannelMinMaxObserver
from fxquant.zoo import efficientnet_lite0, imagenet_photos

# feature maps measured: name -> module path (None: the model input)
LAYERS: dict[str, str | None] = {
    "input": None,
    "stem relu6": "_stem_relu",
    "stem bn": "_bn0",
    "b1 expand bn": "_blocks.1._bn0",
    "b1 dw relu6": "_blocks.1._relu1",
    "b2 project bn": "_blocks.2._bn2",
    "b5 expand relu6": "_blocks.5._relu0",
    "b9 dw bn": "_blocks.9._bn1",
    "b9 project bn": "_blocks.9._bn2",
    "b14 dw bn": "_blocks.14._bn1",
    "b15 project bn": "_blocks.15._bn2",
    "head bn": "_bn1",
    "head relu6": "_head_relu",
}
SCHEMES = {
    "affine quint8": {},
    "symmetric qint8": {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric},
}


@dataclass(frozen=True, kw_only=True)
class Timing:
    ours_us: float
    upstream_us: float

    @property
    def speedup(self) -> float:
        return self.upstream_us / self.ours_us


@dataclass(frozen=True, kw_only=True)
class Call:
    """``prepare()`` does the untimed set-up of one call and returns the part to time."""

    prepare: Callable[[], Callable[[], object]]


def repeated(fn: Callable[[], object]) -> Call:
    return Call(prepare=lambda: fn)


def observing(observer: torch.nn.Module, batches: list[torch.Tensor], *, fresh: bool) -> Call:
    """Calls feeding the observer the next batch (round robin). With ``fresh``, the batch is
    first copied into one buffer (untimed), as a layer writes its output just before its
    observer sees it: the data then sits in cache."""
    out = torch.empty_like(batches[0])
    state = {"i": 0}

    def prepare() -> Callable[[], object]:
        state["i"] += 1
        batch = batches[state["i"] % len(batches)]
        if not fresh:
            return lambda: observer(batch)
        torch.mul(batch, 1.0, out=out)
        return lambda: observer(out)

    return Call(prepare=prepare)


def blocked(ours: Call, upstream: Call, calls: int, blocks: int = 5) -> Timing:
    """Median CPU time of each call's timed part over ``calls`` calls, made in ``blocks``
    alternating blocks of back-to-back calls, each block after one untimed warm-up call: each
    side in its steady state, while a drifting machine load affects both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    per_block = max(calls // blocks, 1)
    for _ in range(blocks):
        for call, sink in ((ours, times[0]), (upstream, times[1])):
            call.prepare()()  # warm-up, untimed: the other side's block just ran
            for _ in range(per_block):
                timed = call.prepare()
                start = time.thread_time()
                timed()
                sink.append(time.thread_time() - start)
    return Timing(
        ours_us=statistics.median(times[0]) * 1e6, upstream_us=statistics.median(times[1]) * 1e6
    )


def calibrated(make: Callable[[], torch.nn.Module], batches: list[torch.Tensor]) -> torch.nn.Module:
    observer = make()
    for batch in batches:
        observer(batch)
    return observer


def l2_error(x: torch.Tensor, observer: torch.nn.Module) -> float:
    scale, zero_point = observer.calculate_qparams()  # type: ignore[operator]
    xq = torch.fake_quantize_per_tensor_affine(
        x,
        float(scale),
        int(zero_point),
        observer.quant_min,
        observer.quant_max,  # type: ignore[arg-type]
    )
    return float((x - xq).norm())


def capture(
    model: torch.nn.Module, photos: torch.Tensor, batch: int
) -> dict[str, list[torch.Tensor]]:
    """Feature maps of ``LAYERS`` for ``photos`` run in batches of ``batch``."""
    modules = dict(model.named_modules())
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in LAYERS}
    hooks = [
        modules[path].register_forward_hook(
            lambda _m, _i, out, name=name: maps[name].append(out.detach().clone())
        )
        for name, path in LAYERS.items()
        if path is not None
    ]
    with torch.no_grad():
        for chunk in photos.split(batch):
            maps["input"].append(chunk.clone())
            model(chunk)
    for hook in hooks:
        hook.remove()
    return maps


def fmt_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print(fmt_row(header, widths))
    print(fmt_row(["-" * w for w in widths], widths))
    for row in rows:
        print(fmt_row(row, widths))


def histogram_speed(activations: dict[str, list[torch.Tensor]]) -> None:
    g = torch.Generator().manual_seed(0)
    randn = [torch.randn(16, 64, 32, 32, generator=g) for _ in range(8)]
    inputs = {
        "randn 16x64x32x32 (1.05M)": randn,
        "b1 expand bn, 1 photo (1.20M)": [
            a[i : i + 1] for a in activations["b1 expand bn"] for i in range(2)
        ],
        "stem relu6, 3 photos (1.20M)": [
            torch.cat(activations["stem relu6"])[i : i + 3] for i in (0, 3)
        ],
    }
    rows = []
    for name, batches in inputs.items():
        ours = calibrated(HistogramObserver, batches)
        upstream = calibrated(tq.HistogramObserver, batches)
        fwd = blocked(
            observing(ours, batches, fresh=True), observing(upstream, batches, fresh=True), 40
        )
        cq = blocked(repeated(ours.calculate_qparams), repeated(upstream.calculate_qparams), 30)
        rows.append([name, *_times(fwd), *_times(cq)])
    # the same observers fed 8 different tensors in turn (32 MB): none is in cache
    ours = calibrated(HistogramObserver, randn)
    upstream = calibrated(tq.HistogramObserver, randn)
    cold = blocked(observing(ours, randn, fresh=False), observing(upstream, randn, fresh=False), 40)
    rows.append(["randn 1.05M, 8 batches cycled (cold)", *_times(cold), "", "", ""])
    table(
        "HistogramObserver, time per call in us (median; the observed activation was just "
        "written, as a layer's output is, except in the last row)",
        [
            "activation",
            "forward ours",
            "upstream",
            "speedup",
            "calc_qparams ours",
            "upstream",
            "speedup",
        ],
        rows,
    )


def _times(t: Timing) -> list[str]:
    return [f"{t.ours_us:,.0f}", f"{t.upstream_us:,.0f}", f"{t.speedup:.1f}x"]


def histogram_qparams_speed(activations: dict[str, list[torch.Tensor]]) -> None:
    rows, total = [], [0.0, 0.0]
    for name, batches in activations.items():
        ours = calibrated(HistogramObserver, batches)
        upstream = calibrated(tq.HistogramObserver, batches)
        cq = blocked(repeated(ours.calculate_qparams), repeated(upstream.calculate_qparams), 10)
        total[0] += cq.ours_us
        total[1] += cq.upstream_us
        rows.append([name, f"{cq.ours_us:,.0f}", f"{cq.upstream_us:,.0f}", f"{cq.speedup:.1f}x"])
    rows.append(
        ["all layers", f"{total[0]:,.0f}", f"{total[1]:,.0f}", f"{total[1] / total[0]:.1f}x"]
    )
    table(
        "HistogramObserver.calculate_qparams on EfficientNet-Lite0 activations (affine quint8), us",
        ["layer", "ours", "upstream", "speedup"],
        rows,
    )


def histogram_error(
    calibration: dict[str, list[torch.Tensor]], holdout: dict[str, list[torch.Tensor]]
) -> None:
    header = ["layer"]
    for scheme in SCHEMES:
        header += [f"{scheme}: calib", "holdout"]
    rows, totals = [], {key: [0.0, 0.0] for key in header[1:]}
    for name in LAYERS:
        row = [name]
        for scheme, kwargs in SCHEMES.items():
            ours = calibrated(partial(HistogramObserver, **kwargs), calibration[name])
            upstream = calibrated(partial(tq.HistogramObserver, **kwargs), calibration[name])
            for column, data in ((f"{scheme}: calib", calibration), ("holdout", holdout)):
                x = torch.cat([b.flatten() for b in data[name]])
                e_ours, e_up = l2_error(x, ours), l2_error(x, upstream)
                key = column if column != "holdout" else f"{scheme}: holdout"
                totals.setdefault(key, [0.0, 0.0])
                totals[key][0] += e_ours**2
                totals[key][1] += e_up**2
                row.append(f"{e_ours / e_up:.4f}")
        rows.append(row)
    summary = ["all layers (sum of squares)"]
    for scheme in SCHEMES:
        for column in ("calib", "holdout"):
            ours_sq, up_sq = totals[f"{scheme}: {column}"]
            summary.append(f"{ours_sq / up_sq:.4f}")
    rows.append(summary)
    table(
        "HistogramObserver L2 error ||x - fakequant(x)||, ours / upstream (< 1: ours better); "
        "EfficientNet-Lite0, 8 calibration photos in batches of 2, 8 held-out photos",
        header,
        rows,
    )


def minmax_overhead() -> None:
    g = torch.Generator().manual_seed(1)
    activation = [torch.randn(16, 64, 32, 32, generator=g) for _ in range(4)]
    weight = [torch.randn(256, 128, 3, 3, generator=g) for _ in range(4)]
    cases = [
        ("MinMaxObserver", "activation 1.05M", MinMaxObserver, tq.MinMaxObserver, {}, activation),
        (
            "MinMaxObserver",
            "conv weight 256x128x3x3",
            MinMaxObserver,
            tq.MinMaxObserver,
            {},
            weight,
        ),
        (
            "PerChannelMinMaxObserver",
            "activation 1.05M, ch_axis=1",
            PerChannelMinMaxObserver,
            tq.PerChannelMinMaxObserver,
            {"ch_axis": 1},
            activation,
        ),
        (
            "PerChannelMinMaxObserver",
            "conv weight 256x128x3x3, ch_axis=0",
            PerChannelMinMaxObserver,
            tq.PerChannelMinMaxObserver,
            {"ch_axis": 0, "dtype": torch.qint8, "qscheme": torch.per_channel_symmetric},
            weight,
        ),
    ]
    rows = []
    for observer, data_name, ours_cls, up_cls, kwargs, batches in cases:
        ours = calibrated(partial(ours_cls, **kwargs), batches)
        upstream = calibrated(partial(up_cls, **kwargs), batches)
        fwd = blocked(
            observing(ours, batches, fresh=False), observing(upstream, batches, fresh=False), 40
        )
        rows.append(
            [
                observer,
                data_name,
                f"{fwd.ours_us:,.0f}",
                f"{fwd.upstream_us:,.0f}",
                f"{fwd.speedup:.2f}x",
            ]
        )
    table(
        "Min/max observers, time per forward in us (median)",
        ["observer", "input", "ours", "upstream", "speedup"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="repeat the speed tables N times")
    parser.add_argument("--histogram-only", action="store_true", help="only the speed tables")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # upstream's deprecation notices
    print(
        f"fxquant observers vs torch.ao.quantization; torch {torch.__version__}; single thread, "
        "times are that thread's CPU time"
    )
    model = efficientnet_lite0()
    calibration = capture(model, imagenet_photos(8, split="calibration"), batch=2)
    for _ in range(args.runs):
        histogram_speed(calibration)
        histogram_qparams_speed(calibration)
    if not args.histogram_only:
        holdout = capture(model, imagenet_photos(8, split="holdout"), batch=2)
        histogram_error(calibration, holdout)
        minmax_overhead()


if __name__ == "__main__":
    main()
