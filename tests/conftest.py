import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    # upstream torch.ao.quantization (our oracle) warns on every quantized-tensor creation
    warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
    config.addinivalue_line(
        "filterwarnings", "ignore:.*quantized tensor creation functions.*:UserWarning"
    )
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:torch.ao.*")
