"""Small models shared by the eager tests, each buildable with fxquant's stubs or upstream's.

``ns`` is the module providing ``QuantStub`` / ``DeQuantStub``: ``fxquant.eager`` or
``torch.ao.quantization`` (the oracle). Models built from the same seed have equal weights.
"""

from __future__ import annotations

import contextlib
import pathlib
import types

import pytest
import torch
import torch.ao.quantization as tq
from helpers import quiet_upstream
from torch import nn

import fxquant.eager as fe

quiet_upstream()

_EAGER_TESTS = pathlib.Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    # upstream's eager API (the oracle) warns on every call that it is deprecated
    for item in items:
        if _EAGER_TESTS in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings(
                "ignore:torch.ao.quantization is deprecated:DeprecationWarning"))


class ConvBnReLUNet(nn.Module):
    """quant -> conv-bn-relu -> conv-bn-relu -> pool -> linear -> dequant, for 1x8x8 inputs."""

    def __init__(self, ns: types.ModuleType, num_classes: int = 10) -> None:
        super().__init__()
        self.quant = ns.QuantStub()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 4 * 4, num_classes)
        self.dequant = ns.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.fc(self.flatten(self.pool(x)))
        return self.dequant(x)


FUSE_GROUPS = [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]]


class MLP(nn.Module):
    """quant -> linear-relu -> linear -> dequant."""

    def __init__(self, ns: types.ModuleType) -> None:
        super().__init__()
        self.quant = ns.QuantStub()
        self.fc1 = nn.Linear(16, 32)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(32, 8)
        self.dequant = ns.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.fc2(self.relu(self.fc1(self.quant(x)))))


class LSTMNet(nn.Module):
    """An LSTM over a sequence, then a linear head on the last step."""

    def __init__(self, input_size: int = 8, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


@contextlib.contextmanager
def single_thread():
    """Run torch single-threaded: on the shared 2-core machine small ops run much faster
    without intra-op thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_module():
    with single_thread():
        yield


def build(cls: type, ns: types.ModuleType, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls(ns)


@pytest.fixture
def ours_and_upstream():
    """``make(cls)`` -> (model with fxquant stubs, model with upstream stubs), equal weights."""

    def make(cls: type, seed: int = 0) -> tuple[nn.Module, nn.Module]:
        return build(cls, fe, seed), build(cls, tq, seed)

    return make


def set_bn_stats(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial running statistics and affine params on every batch norm."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.fixture
def models() -> types.SimpleNamespace:
    """The model classes and helpers of this file, for tests (conftest is not importable)."""
    return types.SimpleNamespace(
        ConvBnReLUNet=ConvBnReLUNet,
        MLP=MLP,
        LSTMNet=LSTMNet,
        FUSE_GROUPS=FUSE_GROUPS,
        build=build,
        set_bn_stats=set_bn_stats,
    )


# --- real data: scikit-learn's handwritten digits (1797 8x8 images) --------------------------


@pytest.fixture(scope="session")
def digits() -> types.SimpleNamespace:
    """Digits scaled to [0, 1] as ``[N, 1, 8, 8]``, labels, and a fixed train/test split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return types.SimpleNamespace(
        images=images, labels=labels, train=order[:1200], test=order[1200:]
    )


def train_on_digits(model: nn.Module, inputs: torch.Tensor, digits: types.SimpleNamespace,
                    *, epochs: int, lr: float) -> nn.Module:
    """A few epochs of Adam on the training split; returns the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(epochs):
        order = digits.train[torch.randperm(len(digits.train), generator=generator)]
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(inputs[batch]), digits.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, inputs: torch.Tensor, digits: types.SimpleNamespace) -> float:
    with torch.no_grad():
        predictions = model(inputs[digits.test]).argmax(1)
    return float((predictions == digits.labels[digits.test]).float().mean())


@pytest.fixture(scope="session")
def digits_cnn(digits) -> nn.Module:
    """A ConvBnReLUNet (fxquant stubs) trained on the digits to ~98% test accuracy (~2 s)."""
    torch.manual_seed(0)
    with single_thread():
        return train_on_digits(ConvBnReLUNet(fe), digits.images, digits, epochs=8, lr=3e-3)


@pytest.fixture(scope="session")
def digits_lstm(digits) -> nn.Module:
    """An LSTMNet reading each digit as 8 rows of 8 pixels, trained to ~95% accuracy."""
    torch.manual_seed(0)
    with single_thread():
        return train_on_digits(LSTMNet(), digits.images.squeeze(1), digits, epochs=30, lr=1e-2)


@pytest.fixture
def digits_eval() -> types.SimpleNamespace:
    """``train_on_digits`` and ``accuracy`` for the real-data tests."""
    return types.SimpleNamespace(train=train_on_digits, accuracy=accuracy)
