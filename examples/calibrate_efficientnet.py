"""Quantize EfficientNet-Lite0 (real ImageNet weights) with fxquant, calibrated on real photos.

1. Observers: for every conv/linear layer, attach input-activation observers (min/max and
   histogram) and a per-channel weight observer, calibrate, and print the quantization
   parameters per layer with the error each choice causes on held-out photos; simulate an int8
   model to show where the error comes from (weights vs activations).
2. The PT2E flow: capture the model, quantize it with the default X86 quantizer, report its
   top-1 agreement and logits SQNR against the float model on held-out photos, and save it
   with ``fxquant.save`` (reload it with ``fxquant.load``; no model class needed).

    python examples/calibrate_efficientnet.py [--calibration 48] [--holdout 64] [--out out/]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fxquant import (
    HistogramObserver,
    MinMaxObserver,
    ObserverBase,
    PerChannelMinMaxObserver,
    get_observer_state_dict,
)
import fxquant
from fxquant.metrics import sqnr, top1_agreement
from fxquant.numerics import fake_quantize_per_channel, fake_quantize_per_tensor
from fxquant.pt2e import capture
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.zoo import efficientnet_lite0, imagenet_photos

try:
    from tqdm import tqdm
except ImportError:  # progress bars are an optional extra
    def tqdm(it, **_):  # type: ignore[no-redef]
        return it


@dataclass
class Site:
    """One quantizable layer: its observers and, after calibration, its qparams."""

    name: str
    module: nn.Module
    observers: dict[str, ObserverBase] = field(default_factory=dict)
    weight_observer: PerChannelMinMaxObserver | None = None


def attach_observers(model: nn.Module) -> list[Site]:
    sites = []
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        site = Site(name, mod)
        site.observers = {"minmax": MinMaxObserver(), "histogram": HistogramObserver()}
        site.weight_observer = PerChannelMinMaxObserver(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric
        )
        site.weight_observer(mod.weight)

        def observe(_m, args, site=site):
            for obs in site.observers.values():
                obs(args[0])

        site.handle = mod.register_forward_pre_hook(observe)  # type: ignore[attr-defined]
        model.add_module(f"activation_post_process_{len(sites)}", nn.ModuleDict(site.observers))
        sites.append(site)
    return sites


def fake_quant_activation(x: torch.Tensor, obs: ObserverBase) -> torch.Tensor:
    scale, zp = obs.calculate_qparams()
    return fake_quantize_per_tensor(x, scale, zp, obs.quant_min, obs.quant_max)


def simulate_int8(
    model: nn.Module, sites: list[Site], method: str | None, x: torch.Tensor, *, weights: bool = True
) -> torch.Tensor:
    """Run ``model`` with conv/linear inputs (calibrated by ``method``; None: left in float)
    and weights (per-channel int8, if ``weights``) fake-quantized."""
    handles, saved = [], {}
    for site in sites:
        if method is not None:
            obs = site.observers[method]
            handles.append(site.module.register_forward_pre_hook(
                lambda _m, args, obs=obs: (fake_quant_activation(args[0], obs),)))
        w = site.module.weight
        saved[site.name] = w.data.clone()
        if weights:
            scale, zp = site.weight_observer.calculate_qparams()
            w.data = fake_quantize_per_channel(w.data, scale, zp.to(torch.int32), 0, -128, 127)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()
        for site in sites:
            site.module.weight.data = saved[site.name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration", type=int, default=48, help="calibration photo crops")
    parser.add_argument("--holdout", type=int, default=128, help="held-out photo crops")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("out"), help="where results are saved")
    parser.add_argument("--rows", type=int, default=12, help="layers shown in the table")
    args = parser.parse_args()
    torch.manual_seed(0)

    model = efficientnet_lite0(pretrained=True)
    calib = imagenet_photos(args.calibration, split="calibration")
    holdout = imagenet_photos(args.holdout, split="holdout")
    with torch.no_grad():
        float_logits = model(holdout)

    sites = attach_observers(model)
    with torch.no_grad():
        for batch in tqdm(calib.split(args.batch_size), desc="calibrating", unit="batch"):
            model(batch)
    for site in sites:
        site.handle.remove()  # type: ignore[attr-defined]

    # per-layer error on held-out activations (first held-out batch)
    captured: dict[str, torch.Tensor] = {}
    hooks = [s.module.register_forward_pre_hook(
        lambda _m, a, n=s.name: captured.__setitem__(n, a[0].detach())) for s in sites]
    with torch.no_grad():
        model(holdout[: args.batch_size])
    for h in hooks:
        h.remove()

    rows = []
    for site in sites:
        act = captured[site.name]
        row = {"layer": site.name, "min": float(site.observers["minmax"].min_val),
               "max": float(site.observers["minmax"].max_val)}
        for method, obs in site.observers.items():
            scale, zp = obs.calculate_qparams()
            row[f"{method}_scale"], row[f"{method}_zp"] = float(scale), int(zp)
            row[f"{method}_sqnr"] = sqnr(act, fake_quant_activation(act, obs))
        ws, wz = site.weight_observer.calculate_qparams()
        w = site.module.weight.detach()
        row["weight_sqnr_per_channel"] = sqnr(
            w, fake_quantize_per_channel(w, ws, wz.to(torch.int32), 0, -128, 127))
        rows.append(row)

    print(f"\nEfficientNet-Lite0: {len(sites)} conv/linear layers calibrated on "
          f"{args.calibration} real photo crops; errors on held-out crops "
          "(SQNR, dB: higher is better)\n")
    header = f"{'layer':34} {'range':>18} {'minmax s / zp':>17} {'hist s / zp':>17} " \
             f"{'minmax':>7} {'hist':>7} {'weight':>7}"
    print(header)
    print("-" * len(header))
    worst = sorted(rows, key=lambda r: r["minmax_sqnr"])[: args.rows]
    for r in worst:
        print(f"{r['layer'][:34]:34} [{r['min']:7.2f},{r['max']:7.2f}] "
              f"{r['minmax_scale']:10.5f}/{r['minmax_zp']:4d} {r['histogram_scale']:10.5f}/{r['histogram_zp']:4d} "
              f"{r['minmax_sqnr']:7.1f} {r['histogram_sqnr']:7.1f} {r['weight_sqnr_per_channel']:7.1f}")
    print(f"(the {len(worst)} layers with the lowest min/max SQNR; all {len(rows)} are in the JSON)")

    variants = {
        "weights + activations (min/max)": ("minmax", True),
        "weights + activations (histogram)": ("histogram", True),
        "activations only (min/max)": ("minmax", False),
        "activations only (histogram)": ("histogram", False),
        "weights only": (None, True),
    }
    summary = {}
    for label, (method, weights) in variants.items():
        logits = simulate_int8(model, sites, method, holdout, weights=weights)
        agree = top1_agreement(float_logits, logits)
        summary[label] = {"top1_agreement": agree, "logits_sqnr_db": sqnr(float_logits, logits)}
    print("\nSimulated int8 at every conv/linear (per-channel int8 weights, uint8 inputs), "
          f"on {args.holdout} held-out crops:")
    for label, s in summary.items():
        print(f"  {label:36} top-1 agreement with float {s['top1_agreement']:6.1%}   "
              f"logits SQNR {s['logits_sqnr_db']:5.1f} dB")

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(get_observer_state_dict(model), args.out / "observer_state.pt")
    pt2e = quantize_with_pt2e(calib, holdout, float_logits, args)
    (args.out / "calibration_report.json").write_text(json.dumps(
        {"layers": rows, "simulated_int8": summary, "pt2e_x86": pt2e}, indent=2))
    print(f"\nsaved {args.out / 'calibration_report.json'}, {args.out / 'observer_state.pt'} "
          f"and {args.out / 'efficientnet_lite0_int8.fxq'}")


def quantize_with_pt2e(calib: torch.Tensor, holdout: torch.Tensor, float_logits: torch.Tensor,
                       args: argparse.Namespace) -> dict[str, float]:
    """The real flow: capture, prepare with the X86 quantizer, calibrate, convert, save."""
    model = efficientnet_lite0(pretrained=True)
    gm = capture(model, (calib[: args.batch_size],))
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    gm = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for batch in tqdm(calib.split(args.batch_size), desc="PT2E calibration", unit="batch"):
            gm(batch)
    q = convert_pt2e(gm)
    with torch.no_grad():
        logits = torch.cat([q(b) for b in holdout.split(args.batch_size)])
    result = {"top1_agreement": top1_agreement(float_logits, logits),
              "logits_sqnr_db": sqnr(float_logits, logits)}
    print(f"\nPT2E, X86InductorQuantizer default config (int8 q/dq model), {len(holdout)} held-out "
          f"crops: top-1 agreement with float {result['top1_agreement']:.1%}, "
          f"logits SQNR {result['logits_sqnr_db']:.1f} dB")
    path = args.out / "efficientnet_lite0_int8.fxq"
    fxquant.save(q, path, example_inputs=(holdout[: args.batch_size],))
    reloaded = fxquant.load(path)
    same = torch.equal(reloaded(holdout[: args.batch_size]), q(holdout[: args.batch_size]))
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB); reloaded outputs bit-identical: {same}")
    return result


if __name__ == "__main__":
    main()
