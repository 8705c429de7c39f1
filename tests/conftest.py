"""Shared fixtures: float64 by default; ``--device`` / ``--dtype`` select others."""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for the tests")
    parser.addoption("--dtype", default="float64", choices=["float64", "float32"])


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
