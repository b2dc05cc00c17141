"""Shared fixtures: tiny models, an isolated torch hub cache, offline weights."""

from __future__ import annotations

import pytest
import torch

# 1/16 of the paper's channels (4..32) and a small classifier: fast, yet every layer is there.
TINY = {"width": 1 / 16, "hidden": 32}
TINY_IMAGE = 32


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
