"""``python -m fxquant`` in a subprocess, end to end: quantize -> report -> load -> compare on
a small CNN trained on real handwritten digits, and quantize on real EfficientNet-Lite0 with
real photos from an image folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import fxquant
from fxquant.api import quantize_model
from fxquant.cli import main
from fxquant.cli.errors import ExitCode
from fxquant.metrics import mean_cosine, sqnr, top1_agreement
from fxquant.zoo import IMAGENET_MEAN, IMAGENET_STD, imagenet_photos

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BATCH = 16


@pytest.fixture(scope="module")
def quantized_digits(digits, tmp_path_factory, fxquant_cli):
    out = tmp_path_factory.mktemp("digits_out")
    run = fxquant_cli(
        "quantize", digits.model_ref, "--data", str(digits.calibration), "--eval-data", str(digits.holdout),
        "--batch-size", str(BATCH), "--out", str(out / "digits_int8.fxq"), "--report-dir", str(out / "report"),
        "--no-progress",
    )
    assert run.returncode == 0, run.stderr
    return out, run


def test_quantize_writes_model_and_report(quantized_digits):
    out, run = quantized_digits
    assert (out / "digits_int8.fxq").stat().st_size > 1000
    assert (out / "report" / "report.png").read_bytes()[:8] == PNG_MAGIC
    html = (out / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html and "classifier" in html
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["layers"] and {"top1_agreement", "output_sqnr_db"} <= set(report["metrics"])
    summary = [line for line in run.stdout.splitlines() if "quantized for x86" in line]
    assert summary and "top-1 agreement" in summary[0] and "on 64 samples" in summary[0]
    assert "calibration data: 64 tensor samples" in run.stderr


def test_report_rerenders_the_saved_report(quantized_digits, tmp_path, fxquant_cli):
    out, quantize_run = quantized_digits
    run = fxquant_cli("report", str(out / "report" / "report.json"), "--png", str(tmp_path / "again.png"),
                      "--html", str(tmp_path / "again.html"), "--worst", "2")
    assert run.returncode == 0, run.stderr
    table = run.stdout.split("\nlayers whose float fallback")[0]
    assert table.strip() and table in quantize_run.stdout  # the same table quantize printed
    assert run.stdout.count("dB (") >= 2  # two ranked layers
    assert (tmp_path / "again.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "again.html").read_text().startswith("<!")


def _batches(tensor):
    return list(tensor.split(BATCH))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's own deprecation notices
def test_saved_model_is_bit_identical_to_the_quantized_one(digits, quantized_digits):
    out, _ = quantized_digits
    loaded = fxquant.load(out / "digits_int8.fxq")
    calibration = torch.load(digits.calibration, weights_only=True)
    # the same calibration the CLI did, through the library
    result = quantize_model(digits.build(), (calibration[:BATCH],), _batches(calibration), report=False, progress=False)
    for batch in _batches(digits.holdout_tensor):
        assert torch.equal(loaded(batch), result.model(batch))


def test_compare_numbers_equal_fxquant_metrics(digits, quantized_digits, fxquant_cli):
    out, _ = quantized_digits
    run = fxquant_cli("compare", digits.model_ref, str(out / "digits_int8.fxq"), "--data", str(digits.holdout),
                      "--json", "--no-progress")
    assert run.returncode == 0, run.stderr
    numbers = json.loads(run.stdout)
    float_model, loaded = digits.build(), fxquant.load(out / "digits_int8.fxq")
    with torch.no_grad():
        ref = torch.cat([float_model(b) for b in _batches(digits.holdout_tensor)])
        act = torch.cat([loaded(b) for b in _batches(digits.holdout_tensor)])
    assert numbers["samples"] == 64 and numbers["batches"] == 4 and numbers["batch_size"] == BATCH
    assert numbers["sqnr_db"] == pytest.approx(sqnr(ref, act), rel=1e-9)
    assert numbers["top1_agreement"] == pytest.approx(top1_agreement(ref, act), rel=1e-9)
    assert numbers["mean_cosine"] == pytest.approx(mean_cosine(ref, act), rel=1e-9)
    assert numbers["float_ms_per_batch"] > 0 and numbers["quantized_ms_per_batch"] > 0
    # the loaded q/dq graph is also lowered to int8 kernels and measured
    from fxquant.lowering import lower_to_int8

    lowered = lower_to_int8(loaded)
    with torch.no_grad():
        low = torch.cat([lowered(b) for b in _batches(digits.holdout_tensor)])
    assert numbers["lowered_ms_per_batch"] > 0
    assert numbers["lowered_sqnr_db"] == pytest.approx(sqnr(ref, low), rel=1e-9)
    # quantize measured the same model on the same held-out data
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["metrics"]["output_sqnr_db"] == pytest.approx(numbers["sqnr_db"], rel=1e-9)


def test_budget_not_met_exits_4_and_still_writes(digits, tmp_path, capsys):
    code = main([
        "quantize", digits.model_ref, "--data", str(digits.calibration), "--batch-size", str(BATCH),
        "--eval-data", str(digits.holdout), "--report-batches", "1",
        "--accuracy-budget", "200", "--max-float-layers", "1", "--out", str(tmp_path / "m.fxq"), "--no-progress",
    ])
    captured = capsys.readouterr()
    assert code == ExitCode.BUDGET_NOT_MET, captured.err
    assert "accuracy budget not met" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "m.fxq").is_file()
    report = json.loads((tmp_path / "report.json").read_text())
    budget_ops = [op for op in report["float_ops"] if op["reason"] == "ACCURACY_BUDGET"]
    assert budget_ops, report["float_ops"]  # the budget kept a layer in float before giving up
    assert any("first 1 of 4 evaluation batches" in note for note in report["notes"])


def test_tampered_model_exits_3_in_a_subprocess(digits, quantized_digits, tmp_path, fxquant_cli):
    out, _ = quantized_digits
    raw = bytearray((out / "digits_int8.fxq").read_bytes())
    raw[len(raw) - 50] ^= 0xFF  # flip one byte of the payload
    (tmp_path / "tampered.fxq").write_bytes(bytes(raw))
    run = fxquant_cli("compare", digits.model_ref, str(tmp_path / "tampered.fxq"), "--data", str(digits.holdout))
    assert run.returncode == ExitCode.BAD_INPUT
    assert "checksum mismatch" in run.stderr and "Traceback" not in run.stderr


def _write_photo_folder(folder, n):
    folder.mkdir()
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i, photo in enumerate(imagenet_photos(n, size=256)):
        rgb = (photo * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(rgb)).save(folder / f"photo_{i:03d}.png")


@pytest.mark.slow
def test_efficientnet_lite0_on_a_folder_of_real_photos(tmp_path, fxquant_cli):
    # 6 photos, batch 4: one batch calibrates and is measured, two photos are left out. Costs
    # about a minute of CPU, nearly all in the library (output-aware weight observers, report).
    _write_photo_folder(tmp_path / "photos", 6)
    run = fxquant_cli("quantize", "fxquant.zoo:efficientnet_lite0", "--data", str(tmp_path / "photos"),
                      "--batch-size", "4", "--out", str(tmp_path / "lite0.fxq"), "--no-progress", timeout=900)
    assert run.returncode == 0, run.stderr
    assert "calibration data: 6 image samples" in run.stderr
    assert "2 of 6 samples left out" in run.stderr
    metrics = json.loads((tmp_path / "report.json").read_text())["metrics"]
    assert metrics["output_sqnr_db"] > 12 and metrics["top1_agreement"] >= 0.5 and metrics["eval_samples"] == 4, metrics
    assert "efficientnet_lite0 quantized for x86: output SQNR" in run.stdout
    assert fxquant.serialization.read_header(tmp_path / "lite0.fxq")["example_inputs"][0]["shape"] == [4, 3, 224, 224]
