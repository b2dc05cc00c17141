"""The C++ Winograd kernels: built on first use, the same numbers as the torch-op path, clear failures."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from vggbench.backends.winograd import matrices, native
from vggbench.backends.winograd.model import WinogradConv2d, variants, winograd_model

# one worker builds the C++ kernels (about 11 s of compiler), the other runs other tests meanwhile
pytestmark = pytest.mark.xdist_group("native_kernels")


@contextlib.contextmanager
def kernels_in_a_temp_cache(tmp_path_factory):
    """The C++ kernels (or None), built where $VGGBENCH_CACHE says; while unset, in a temp folder kept set for
    the block (the session), so that no test writes ~/.cache/vggbench. Built on first use, never at collection."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("VGGBENCH_CACHE"):
            mp.setenv("VGGBENCH_CACHE", str(tmp_path_factory.mktemp("vggbench_cache")))
        yield native.winograd()


@pytest.fixture(scope="session", autouse=True)
def kernels(tmp_path_factory):
    with kernels_in_a_temp_cache(tmp_path_factory) as lib:
        yield lib


@pytest.fixture
def lib(kernels):
    """The kernels, for tests that call them (the header and key tests need no compiler)."""
    if kernels is None:
        pytest.skip(f"no C++ kernels: {native.unavailable_reason()}")
    return kernels


@pytest.mark.parametrize("m", [2, 4, 6])
@pytest.mark.parametrize("stream", [False, True])
def test_transforms_match_the_torch_op_path(m, stream, lib):
    torch.manual_seed(m)
    conv = nn.Conv2d(35, 18, 3, padding=1)  # channel tails: 35 = 2 x 16 + 3, 18 = 16 + 2
    x = torch.randn(2, 11, 14, 35)  # NHWC; m divides neither side for m = 4, 6
    ops = WinogradConv2d(conv, m, separable=True)
    a, th, tw = m + 2, -(-11 // m), -(-14 // m)
    tiles = 2 * th * tw
    v = native.winograd_input(m, x, 0, tiles, torch.empty(a * a, tiles, 35), stream=stream)
    # the torch-op path's transformed tiles, from its padded input: [a*a, n, th, tw, c]
    padded = torch.zeros(2, th * m + 2, tw * m + 2, 35)
    padded[:, 1:12, 1:15] = x
    d = padded.unfold(1, a, m).unfold(2, a, m).permute(4, 5, 0, 1, 2, 3).reshape(a, a, -1)
    expected = torch.einsum("ik,klp,jl->ijp", ops.t_in, d, ops.t_in).reshape(a * a, tiles, 35)
    torch.testing.assert_close(v, expected, rtol=1e-5, atol=1e-4)
    out = torch.full((2, 11, 14, 18), float("nan"))  # every pixel must be written
    with torch.inference_mode():
        native.winograd_output(m, torch.bmm(v, ops.u), ops.bias, out, 0, tiles, relu=True, stream=stream)
        reference = torch.relu(conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    assert not out.isnan().any()
    assert (out - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_bands_write_only_their_tiles(lib):
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    x = torch.randn(1, 8, 8, 16)
    layer = WinogradConv2d(conv, 4)
    out = torch.full((1, 8, 8, 16), -7.0)
    v = native.winograd_input(4, x, 1, 3, torch.empty(36, 2, 16))  # tiles 1 and 2 of 4: the top right, bottom left
    native.winograd_output(4, torch.bmm(v, layer.u), None, out, 1, 3, relu=False)
    with torch.no_grad():
        reference = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert (out[:, :4, :4] == -7).all() and (out[:, 4:, 4:] == -7).all()  # tiles 0 and 3 untouched
    torch.testing.assert_close(out[:, :4, 4:], reference[:, :4, 4:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[:, 4:, :4], reference[:, 4:, :4], rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_refused(lib):
    x = torch.randn(1, 8, 8, 16)
    with pytest.raises(ValueError, match=r"out must be \(36, 4, 16\)"):
        native.winograd_input(4, x, 0, 4, torch.empty(36, 4, 8))
    with pytest.raises(ValueError, match="x: expected a contiguous fp32 CPU tensor"):
        native.winograd_input(4, x.double(), 0, 4, torch.empty(36, 4, 16))
    with pytest.raises(ValueError, match="x: expected a contiguous fp32"):
        native.winograd_input(4, x.permute(0, 2, 1, 3), 0, 4, torch.empty(36, 4, 16))
    with pytest.raises(RuntimeError, match=r"F\(3x3\) failed: bad tile size"):
        native.winograd_input(3, x, 0, 9, torch.empty(25, 9, 16))


def test_a_failed_build_falls_back_with_its_reason(monkeypatch, tmp_path, lib):
    monkeypatch.setenv("VGGBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a compiler that always fails
    native.winograd.cache_clear()
    try:
        assert native.winograd() is None
        assert native.unavailable_reason().startswith("could not build winograd.cpp: false failed")
        assert not list(tmp_path.rglob("*.so"))  # nothing half-written left behind
        assert all("-cpp" not in name for name in variants())  # the tuner uses the torch-op transforms
        with pytest.raises(ValueError, match="the C.. kernels are unavailable: could not build"):
            winograd_model(nn.Sequential(), torch.randn(1, 3, 8, 8), choose="F4-cpp")
        with pytest.raises(RuntimeError, match="the C.. Winograd kernels are unavailable"):
            WinogradConv2d(nn.Conv2d(4, 4, 3, padding=1), native=True)
        monkeypatch.setenv("VGGBENCH_NO_NATIVE", "1")
        native.winograd.cache_clear()
        assert native.winograd() is None and native.unavailable_reason() == "VGGBENCH_NO_NATIVE is set"
    finally:
        monkeypatch.undo()  # back to the session's cache, where the library is already built
        native.winograd.cache_clear()
    assert native.winograd() is not None


def test_the_library_is_cached_under_vggbench_cache(lib):
    cxx = native.describe()["compiler"]
    path = native.library_path(cxx)
    assert path.parent == Path(os.environ["VGGBENCH_CACHE"]) / "kernels" and path.exists()
    stamp = path.stat().st_mtime_ns
    native.winograd.cache_clear()
    try:
        assert native.winograd() is not None and path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    finally:
        native.winograd.cache_clear()


def _header_arrays(header: str, m: int) -> dict[str, list[float]]:
    block = header.split(f"struct Wino<{m}> {{")[1].split("\n};")[0]
    return {name: [float(v) for v in re.findall(r"(-?[0-9.e+-]+)f", body)]
            for name, body in re.findall(r"float (\w+)\[\d+\]\[\d+\] = \{(.*?)\};", block, re.DOTALL)}


@pytest.mark.parametrize("m", matrices.TILES)
def test_the_generated_header_holds_the_python_matrices(m):
    header = matrices.cpp_header()
    bt, _, at = matrices.matrices(m)
    arrays = _header_arrays(header, m)
    assert arrays["BT"] == bt.float().flatten().tolist() and arrays["AT"] == at.float().flatten().tolist()
    assert f"static constexpr int A = {m + 2};" in header
    assert "#define VGGBENCH_WINOGRAD_TILES(X) X(2) X(4) X(6)" in header


def test_a_changed_matrix_changes_the_cache_key(monkeypatch):
    before = native.cache_key("c++", "1.0")
    assert native.cache_key("c++", "1.0") == before  # stable
    bt, g, at = matrices.MATRICES[4]
    monkeypatch.setitem(matrices.MATRICES, 4, (bt, g, [row[:-1] + [row[-1] + 1] for row in at]))
    assert native.cache_key("c++", "1.0") != before
    monkeypatch.undo()
    assert native.cache_key("c++", "1.0") == before and native.cache_key("c++", "2.0") != before
