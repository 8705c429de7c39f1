"""Shared fixtures: float64 by default; ``--device`` / ``--dtype`` select others."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # One intra-op thread per test process: the problems here are small, and OpenMP
    # threads spinning against other processes (pytest-xdist workers, subprocess tests)
    # made small ops up to 20x slower on a loaded 2-core machine. OTGEN_TEST_THREADS
    # overrides.
    torch.set_num_threads(int(os.environ.get("OTGEN_TEST_THREADS", "1")))


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


# ------------------------------------------------------- hypothesis counts in the summary
# Every property test reports how many generated examples it ran; the terminal summary
# prints the total per test file ("fuzzing: N examples over K properties"). The counts
# travel on the reports' user_properties, so they also add up under pytest-xdist.

_PASSING = re.compile(r"(\d+) passing(?: examples?)?[,)]")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    stats = getattr(item, "hypothesis_statistics", None)
    if report.when == "call" and isinstance(stats, str):
        n = sum(int(k) for k in _PASSING.findall(stats))
        report.user_properties.append(("fuzz_examples", n))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    per_file: dict[str, list[int]] = {}
    for key in ("passed", "failed"):
        for rep in terminalreporter.stats.get(key, []):
            for name, value in getattr(rep, "user_properties", []):
                if name == "fuzz_examples":
                    per_file.setdefault(rep.nodeid.split("::")[0], []).append(int(value))
    if not per_file:
        return
    total = sum(sum(v) for v in per_file.values())
    props = sum(len(v) for v in per_file.values())
    terminalreporter.write_line(f"hypothesis fuzzing: {total} generated examples over "
                                f"{props} properties")
    for path, counts in sorted(per_file.items()):
        terminalreporter.write_line(f"  {path}: {sum(counts)} examples, {len(counts)} "
                                    "properties")
