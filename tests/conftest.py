"""Shared fixtures: tiny models, an isolated torch hub cache, offline weights."""

from __future__ import annotations

import os

import pytest
import torch

# 1/16 of the paper's channels (4..32) and a small classifier: fast, yet every layer is there.
TINY = {"width": 1 / 16, "hidden": 32}
TINY_IMAGE = 32


def pytest_configure(config):
    """Under pytest-xdist, share the cores between the workers: each one's torch would otherwise take them
    all (8 workers x 16 threads on a 16-core GPU machine slowed the training tests past minutes)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """Never touch the user's hub cache or the network; keep torch's thread count as the test found it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("VGGBENCH_OFFLINE", "1")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny():
    return dict(TINY)
