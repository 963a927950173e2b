"""Fixtures for the command-line tests: a small CNN trained on scikit-learn's digits (real
8x8 scans of handwritten digits), saved as a Python file + state dict the CLI can load, and
its data as a tensor file; plus a runner for ``python -m fxquant`` in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[2] / "src"

DIGITS_MODULE = '''\
"""A small CNN for scikit-learn's 8x8 digits (written by tests/cli/conftest.py)."""
from pathlib import Path

import torch
from torch import nn


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def build():
    model = DigitsNet()
    model.load_state_dict(torch.load(Path(__file__).with_name("digits_net.pt"), weights_only=True))
    return model.eval()


def not_a_model():
    return 42
'''


@dataclass(frozen=True)
class Digits:
    folder: Path
    module_file: Path
    calibration: Path  # .pt with a [N, 1, 8, 8] float tensor
    holdout: Path
    holdout_tensor: torch.Tensor

    @property
    def model_ref(self) -> str:
        return f"{self.module_file}:build"

    def build(self) -> torch.nn.Module:
        spec = importlib.util.spec_from_file_location("digits_model_for_tests", self.module_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.build()


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    module_file = folder / "digits_model.py"
    module_file.write_text(DIGITS_MODULE)
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    spec = importlib.util.spec_from_file_location("digits_model_train", module_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.DigitsNet()
    _train(model, x[:1500], y[:1500])
    accuracy = (model(x[1500:]).argmax(1) == y[1500:]).float().mean()
    assert accuracy > 0.85, f"the digits CNN trained badly ({accuracy:.2f}); the fixture is broken"
    torch.save(model.state_dict(), folder / "digits_net.pt")
    torch.save(x[:64].clone(), folder / "calibration.pt")
    holdout = x[1500:1564].clone()
    torch.save(holdout, folder / "holdout.pt")
    return Digits(folder=folder, module_file=module_file, calibration=folder / "calibration.pt",
                  holdout=folder / "holdout.pt", holdout_tensor=holdout)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m fxquant ARGS`` in a fresh process (the package from src/, not installed)."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "fxquant", *args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def fxquant_cli():
    """The subprocess runner :func:`run_cli`."""
    return run_cli
