"""Small models for the FX-flow tests and the oracle helpers: each model is built twice from
the same seed (equal weights), prepared by fxquant and by ``torch.ao.quantization.quantize_fx``
with the same qconfig mapping, and fed the same calibration batches."""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from helpers import quiet_upstream
from torch import nn

import fxquant

quiet_upstream()


class SmallCNN(nn.Module):
    """conv-bn-relu, maxpool, conv, add+relu, flatten, linear, sigmoid, reshape, relu, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 3 * 3, 10)
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.relu(self.bn(self.conv(x))))
        z = F.relu(self.conv2(y) + y)
        z = self.fc(torch.flatten(z, 1))
        z = torch.sigmoid(z)
        z = z.reshape(z.shape[0], -1)
        return self.fc2(F.relu(z))


class MLP(nn.Module):
    """linear-relu (module), linear-bn1d, functional relu, mul, dropout, tanh, hardswish."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(32, 32)
        self.bn = nn.BatchNorm1d(32)
        self.fc3 = nn.Linear(32, 32)
        self.drop = nn.Dropout(0.1)
        self.act = nn.Hardswish()
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.fc1(x))
        g = self.bn(self.fc2(h))
        k = F.relu(self.fc3(h))
        h = self.drop(g * k)
        return self.head(self.act(torch.tanh(h) + h))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """A ResNet-18-shaped network (stem, basic blocks with downsampling, pool, fc), narrow."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32), blocks: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


MODELS = {
    "cnn": (SmallCNN, (2, 3, 8, 8)),
    "mlp": (MLP, (4, 16)),
    "resnet": (TinyResNet, (2, 3, 16, 16)),
}


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


def build(name: str, seed: int = 0) -> tuple[nn.Module, list[torch.Tensor]]:
    """The model ``name`` in eval mode and four batches of inputs for it."""
    cls, shape = MODELS[name]
    torch.manual_seed(seed)
    model = cls()
    set_bn_stats(model)
    g = torch.Generator().manual_seed(seed + 10)
    return model.eval(), [torch.randn(shape, generator=g) for _ in range(4)]


def minmax_mapping(ns: types.ModuleType):
    """The default x86 mapping with a deterministic MinMax global qconfig (bit-exact oracle)."""
    qconfig = ns.QConfig(
        activation=ns.MinMaxObserver.with_args(reduce_range=True),
        weight=ns.default_per_channel_weight_observer,
    )
    return ns.get_default_qconfig_mapping("x86").set_global(qconfig)


def observer_sites(gm: torch.fx.GraphModule) -> list[tuple[str, tuple[str, ...]]]:
    """Each observer call as (the node it observes, the nodes reading it) — names only."""
    sites = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and "activation_post_process" in str(node.target):
            sites.append((node.args[0].name, tuple(sorted(u.name for u in node.users))))
    return sites


def prepare_both(name: str, ours_mapping, upstream_mapping, *, calibrate: bool = True):
    """(fxquant prepared, upstream prepared, batches), calibrated on the same batches."""
    from torch.ao.quantization.quantize_fx import prepare_fx as up_prepare_fx

    from fxquant.quantize_fx import prepare_fx

    model, batches = build(name)
    example = (batches[0],)
    ours = prepare_fx(copy.deepcopy(model), ours_mapping, example)
    upstream = up_prepare_fx(copy.deepcopy(model), upstream_mapping, example)
    if calibrate:
        with torch.no_grad():
            for b in batches:
                ours(b)
                upstream(b)
    return ours, upstream, batches


def _namespace() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        MODELS=MODELS, build=build, minmax_mapping=minmax_mapping, observer_sites=observer_sites,
        prepare_both=prepare_both, fxquant=fxquant, tq=tq,
    )


@pytest.fixture
def fx_models() -> types.SimpleNamespace:
    """The models and helpers of this file (conftest is not importable)."""
    return _namespace()


@pytest.fixture(scope="module")
def fx_models_module() -> types.SimpleNamespace:
    """``fx_models`` for module-scoped fixtures."""
    return _namespace()


def pytest_collection_modifyitems(config, items):
    # upstream's FX API (the oracle) warns on every call that it is deprecated
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"))


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_module():
    """Small ops run much faster without intra-op thread contention on the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
