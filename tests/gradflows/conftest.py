"""One torch thread for these small, latency-bound solvers (restored afterwards): on a
shared 2-core machine, intra-op threads only add contention."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
