"""Output-aware weight observer benchmark: search speed, and what it buys FX users.

    PYTHONPATH=src python benchmarks/output_aware_observer.py [--threads N] [--skip-fx]

1. Search time on EfficientNet-Lite0 (real ImageNet weights, X86InductorQuantizer default
   config, calibrated on 48 real photo crops): ``calculate_qparams`` of every
   PerChannelOutputMSEObserver, ours against a plain sequential search (one ratio at a time,
   the whole ``H`` each time, an eigendecomposition for low-rank ``H`` — the previous
   implementation), alternating the two per layer; CPU time of this thread
   (``time.thread_time``), median of 3 per layer, summed. Also checks both choose the same
   scales. ``--threads`` (default 1) sets torch's intra-op threads: with more threads on a
   busy machine, waiting threads spin and the numbers mostly measure the machine's load.
2. FX EfficientNet-Lite0 int8 (``convert_fx``) against the float model on 128 held-out
   photos: upstream's default mapping vs ``get_output_aware_qconfig_mapping`` (x86 and
   onednn): logits SQNR and top-1 agreement.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from fxquant.fx.state import FX_STATE_META_KEY
from fxquant.metrics import sqnr, top1_agreement
from fxquant.pt2e.quantize_pt2e import prepare_pt2e
from fxquant.pt2e.quantizer.output_aware_observer import PerChannelOutputMSEObserver
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.qconfig import (
    get_default_qconfig_mapping,
    get_output_aware_qconfig_mapping,
    link_output_aware_weight_observers_fx,
)
from fxquant.quantize_fx import convert_fx, prepare_fx
from fxquant.zoo import efficientnet_lite0, imagenet_photos

COARSE = [0.95 - 0.05 * i for i in range(10)]
FINE = [d / 100 for d in (-4, -3, -2, -1, 1, 2, 3, 4)]


@torch.no_grad()
def sequential_search(observer: PerChannelOutputMSEObserver) -> torch.Tensor:
    """The previous implementation: the scales it chooses."""
    assert observer._weight is not None and observer.input_moments is not None
    w = observer._weight.float().reshape(observer._weight.shape[0], -1)
    moments = observer.input_moments
    hessian, rows = moments.hessian / moments.rows, int(moments.rows)
    groups, k = hessian.shape[0], hessian.shape[-1]
    if rows >= k // 2:
        factor, square = hessian.float(), True
    else:
        values, vectors = torch.linalg.eigh(hessian)
        factor = (vectors[:, :, -rows:] * values[:, -rows:].clamp(min=0).sqrt().unsqueeze(1)).transpose(1, 2).float()
        square = False
    amax = torch.maximum(-observer.min_val, observer.max_val)

    def error(ratio: torch.Tensor) -> torch.Tensor:
        scale, zero_point = observer._calculate_qparams(-amax * ratio, amax * ratio)
        delta = torch.fake_quantize_per_channel_affine(w, scale, zero_point.int(), 0, -128, 127) - w
        delta = delta.reshape(groups, -1, k)
        out = ((delta @ factor) * delta).sum(-1) if square else (delta @ factor.transpose(1, 2)).square().sum(-1)
        return out.reshape(-1)

    best_ratio = torch.ones_like(amax)
    best_error = error(best_ratio)
    for offsets in (COARSE, FINE):
        center = best_ratio.clone() if offsets is FINE else torch.zeros_like(amax)
        for offset in offsets:
            ratio = (center + offset).clamp(0.5, 1.0)
            err = error(ratio)
            better = err < best_error
            best_error, best_ratio = torch.where(better, err, best_error), torch.where(better, ratio, best_ratio)
    return observer._calculate_qparams(-amax * best_ratio, amax * best_ratio)[0]


def _cpu_seconds(fn) -> tuple[float, torch.Tensor]:
    start = time.thread_time()
    result = fn()
    return time.thread_time() - start, result


def search_speed(model: torch.nn.Module, calibration: torch.Tensor) -> None:
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(torch.export.export(model, (calibration[:16],)).module(), quantizer)
    with torch.no_grad():
        for batch in calibration.split(16):
            prepared(batch)
    observers = [m for m in prepared.modules() if isinstance(m, PerChannelOutputMSEObserver)]
    ours_total = plain_total = 0.0
    same = True
    slowest: list[tuple[float, float, tuple[int, ...]]] = []
    for observer in observers:
        ours_times, plain_times = [], []
        for _ in range(3):
            t, ours = _cpu_seconds(lambda o=observer: o.calculate_qparams()[0])
            ours_times.append(t)
            t, plain = _cpu_seconds(lambda o=observer: sequential_search(o))
            plain_times.append(t)
        same &= torch.equal(ours, plain)
        ours_t, plain_t = statistics.median(ours_times), statistics.median(plain_times)
        ours_total, plain_total = ours_total + ours_t, plain_total + plain_t
        slowest.append((plain_t, ours_t, tuple(observer._weight.shape)))
    print(f"\n1. search over {len(observers)} layers (thread CPU s, torch threads {torch.get_num_threads()})")
    print(f"{'layer weight':>24} {'sequential':>11} {'ours':>8} {'speed-up':>9}")
    for plain_t, ours_t, shape in sorted(slowest, reverse=True)[:6]:
        print(f"{shape!s:>24} {plain_t:11.3f} {ours_t:8.3f} {plain_t / ours_t:8.1f}x")
    print(f"{'all layers':>24} {plain_total:11.3f} {ours_total:8.3f} {plain_total / ours_total:8.1f}x")
    print(f"same scales chosen on every layer: {same}")


def fx_accuracy(model: torch.nn.Module, calibration: torch.Tensor, holdout: torch.Tensor) -> None:
    with torch.no_grad():
        reference = model(holdout)
    print("\n2. FX EfficientNet-Lite0 int8 vs float (128 held-out photos)")
    print(f"{'backend':>8} {'mapping':>13} {'SQNR dB':>8} {'top-1':>7}")
    for backend in ("x86", "onednn"):
        for label, mapping in (("default", get_default_qconfig_mapping(backend)),
                               ("output-aware", get_output_aware_qconfig_mapping(backend))):
            prepared = prepare_fx(model, mapping, (calibration[:16],))
            link_output_aware_weight_observers_fx(prepared, prepared.meta[FX_STATE_META_KEY].weighted_qconfigs)
            with torch.no_grad():
                for batch in calibration.split(16):
                    prepared(batch)
                quantized = convert_fx(prepared)
                out = torch.cat([quantized(b) for b in holdout.split(16)])
            print(f"{backend:>8} {label:>13} {float(sqnr(reference, out)):8.2f} {float(top1_agreement(reference, out)):7.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-fx", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = efficientnet_lite0().eval()
    calibration = imagenet_photos(48, split="calibration")
    torch.set_num_threads(args.threads)
    search_speed(model, calibration)
    if not args.skip_fx:
        fx_accuracy(model, calibration, imagenet_photos(128, split="holdout"))


if __name__ == "__main__":
    main()
