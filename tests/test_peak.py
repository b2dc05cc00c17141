"""Ceilings: the measured one is never below a row (peak_pct <= 100 by construction), the theoretical one comes
from the CPU's instruction set and clock or the GPU's datasheet."""

from __future__ import annotations

import pytest
import torch

import vggbench.bench.sweep as sweep
from tests.conftest import TINY, TINY_IMAGE
from vggbench.bench import peak
from vggbench.bench.results import read_run
from vggbench.core.device import CPU, Device

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC 9R14 96-Core Processor
cpu MHz\t\t: 2600.000
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16
processor\t: 1
cpu MHz\t\t: 2650.000
"""
SAPPHIRE_RAPIDS = ("vendor_id : GenuineIntel\ncpu family : 6\ncpu MHz : 2000.0\n"
                   "flags : avx2 fma avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8\n")


def test_a_row_that_beats_every_gemm_is_the_ceiling_itself():
    ceilings = peak.Ceilings([{"device": "cpu", "precision": "fp32", "gflops_per_s": 100.0, "shape": "512x512x512"}],
                             {("cpu", "fp32"): {"gflops_per_s": 400.0, "source": "table"}})
    assert ceilings.row_fields("cpu", "fp32", 50.0) == {
        "peak_gflops_per_s": 100.0, "peak_pct": 50.0, "gemm_gflops_per_s": 100.0,
        "theoretical_gflops_per_s": 400.0, "theoretical_pct": 12.5}
    ceilings.see("cpu", "fp32", 150.0, "winograd fp32 channels_last batch 8")
    ceilings.see("cpu", "fp32", 120.0, "eager fp32 contiguous batch 8")  # below the best: changes nothing
    fields = ceilings.row_fields("cpu", "fp32", 150.0)
    assert fields["peak_pct"] == 100.0 and fields["gemm_gflops_per_s"] == 100.0 and fields["theoretical_pct"] == 37.5
    assert ceilings.row_fields("cpu", "fp32", 75.0)["peak_pct"] == 50.0
    ceilings.see("cpu", "int8", 30.0, "onnxruntime int8 contiguous batch 1")  # no GEMM: the best row is its ceiling
    assert ceilings.row_fields("cpu", "int8", 30.0)["peak_pct"] == 100.0
    assert ceilings.to_list() == [
        {"device": "cpu", "precision": "fp32", "measured_gflops_per_s": 150.0,
         "measured_source": "winograd fp32 channels_last batch 8", "theoretical_gflops_per_s": 400.0,
         "theoretical_source": "table"},
        {"device": "cpu", "precision": "int8", "measured_gflops_per_s": 30.0,
         "measured_source": "onnxruntime int8 contiguous batch 1", "theoretical_gflops_per_s": None,
         "theoretical_source": None}]


def test_in_a_run_no_row_is_above_its_measured_ceiling(tmp_path, monkeypatch):
    # a GEMM far slower than the model: before, every row read millions of percent
    slow = {"device": "cpu", "precision": "fp32", "dtype": "float32", "n": 256, "reps": 1, "threads": 1,
            "gflops_per_s": 1e-6, "shape": "256x256x256", "shapes": [], "seconds": 0.0}
    monkeypatch.setattr(sweep, "measure_peak", lambda device, precision: dict(slow))
    result = sweep.benchmark(export_cache=tmp_path / "cache", progress=False, models=["vgg11"], backends=["eager"],
                             memory_formats=["contiguous", "channels_last"], image_size=TINY_IMAGE, batch_sizes=[1, 2],
                             warmup=0, warmup_time_s=0.0, min_time_s=0.0, min_iters=2, max_iters=2, **TINY)
    rows = [r for r in result.results if r.status == "ok"]
    assert len(rows) == 4 and all(0 < r.peak_pct <= 100 for r in rows)
    best = max(rows, key=lambda r: r.gflops_per_s)
    assert best.peak_pct == pytest.approx(100.0) and all(r.gemm_gflops_per_s == 1e-6 for r in rows)
    (ceiling,) = [c for c in result.environment["ceilings"] if c["precision"] == "fp32"]
    assert ceiling["measured_gflops_per_s"] == best.gflops_per_s
    assert ceiling["measured_source"] == f"eager fp32 {best.memory_format} batch {best.batch_size}"
    json_path, _ = result.write(tmp_path / "run.json")
    assert read_run(json_path)["environment"]["ceilings"][0] == result.environment["ceilings"][0]


def test_cpu_theoretical_peak_from_the_instruction_set_and_clock(monkeypatch):
    zen4 = peak.read_cpuinfo(ZEN4)
    assert zen4["mhz"] == 2650.0 and zen4["family"] == 25 and "avx512_bf16" in zen4["flags"]
    fp32 = peak.cpu_theoretical("fp32", threads=2, cpuinfo=zen4, max_mhz=3700.0, physical_cores=2)
    assert fp32["gflops_per_s"] == pytest.approx(2 * 3.7 * 32)  # Zen 4: 512-bit FMAs on 256-bit pipes
    assert "AVX-512 on 256-bit FMA pipes" in fp32["source"]
    assert peak.cpu_theoretical("bf16", 2, zen4, 3700.0, 2)["gflops_per_s"] == pytest.approx(2 * 3.7 * 64)
    assert peak.cpu_theoretical("int8", 2, zen4, 3700.0, 2)["gflops_per_s"] == pytest.approx(2 * 3.7 * 128)
    assert peak.cpu_theoretical("fp16", 2, zen4, 3700.0, 2) is None  # no fp16 arithmetic on Zen 4
    # threads beyond the physical cores do not add FMA pipes
    assert peak.cpu_theoretical("fp32", 8, zen4, 3700.0, 2)["gflops_per_s"] == pytest.approx(2 * 3.7 * 32)
    # without psutil's maximum, the clock of /proc/cpuinfo, said to be one
    monkeypatch.setattr("psutil.cpu_freq", lambda: None)
    fallback = peak.cpu_theoretical("fp32", 1, zen4, physical_cores=1)
    assert fallback["gflops_per_s"] == pytest.approx(2.65 * 32) and "/proc/cpuinfo" in fallback["source"]

    spr = peak.read_cpuinfo(SAPPHIRE_RAPIDS)
    assert peak.cpu_theoretical("fp32", 1, spr, 2000.0, 1)["gflops_per_s"] == pytest.approx(2.0 * 64)
    assert peak.cpu_theoretical("bf16", 1, spr, 2000.0, 1)["gflops_per_s"] == pytest.approx(2.0 * 1024)  # AMX
    assert peak.cpu_theoretical("int8", 1, spr, 2000.0, 1)["gflops_per_s"] == pytest.approx(2.0 * 2048)
    avx2 = peak.read_cpuinfo("vendor_id : GenuineIntel\nflags : avx2 fma\n")
    assert peak.cpu_theoretical("fp32", 4, avx2, 3000.0, 4)["gflops_per_s"] == pytest.approx(4 * 3.0 * 32)
    assert peak.cpu_theoretical("bf16", 4, avx2, 3000.0, 4) is None
    assert peak.cpu_theoretical("fp32", 4, peak.read_cpuinfo("flags : sse2\n"), 3000.0, 4) is None


def test_gpu_theoretical_peak_from_the_datasheet(monkeypatch):
    assert peak.gpu_theoretical("NVIDIA H100 80GB HBM3", "amp")["gflops_per_s"] == pytest.approx(989_400)
    assert peak.gpu_theoretical("NVIDIA H100 80GB HBM3", "fp8")["gflops_per_s"] == pytest.approx(1_978_900)
    assert peak.gpu_theoretical("NVIDIA H100 80GB HBM3", "fp32", tf32=True)["gflops_per_s"] == pytest.approx(494_700)
    assert peak.gpu_theoretical("NVIDIA H100 PCIe", "fp16")["gflops_per_s"] == pytest.approx(756_000)
    assert peak.gpu_theoretical("NVIDIA H200", "bf16")["source"].startswith("NVIDIA H200 SXM datasheet")
    assert peak.gpu_theoretical("NVIDIA A100-SXM4-80GB", "fp8") is None  # Ampere has no fp8
    assert peak.gpu_theoretical("NVIDIA L4", "int8")["gflops_per_s"] == pytest.approx(242_500)
    assert peak.gpu_theoretical("NVIDIA L40S", "fp16") is None  # not an L4
    assert peak.gpu_theoretical("NVIDIA GeForce RTX 4090", "bf16")["gflops_per_s"] == pytest.approx(165_200)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H100 80GB HBM3")
    assert peak.theoretical_peak(Device("cuda", 0), "bf16", threads=1)["gflops_per_s"] == pytest.approx(989_400)


def test_several_gemm_shapes_are_timed():
    measured = peak.measure_peak(CPU, "fp32", reps=1, min_call_s=0.0, max_size=256)
    assert [(s["m"], s["k"], s["n"]) for s in measured["shapes"]] == [(256, 256, 256), (128, 128, 128),
                                                                      (2048, 64, 256)]
    assert measured["gflops_per_s"] == max(s["gflops_per_s"] for s in measured["shapes"]) > 0
    assert peak.measure_peak(CPU, "int8") is None


def test_an_effective_rate_has_no_share_of_the_theoretical_peak():
    # Winograd's GFLOP/s counts the direct convolution's FLOPs: 131% of a CPU's theoretical peak was recorded
    ceilings = peak.Ceilings([{"device": "cpu", "precision": "fp32", "gflops_per_s": 100.0, "shape": "512x512x512"}],
                             {("cpu", "fp32"): {"gflops_per_s": 150.0, "source": "table"}})
    ceilings.see("cpu", "fp32", 200.0, "winograd fp32 channels_last batch 8", hardware_rate=False)
    fields = ceilings.row_fields("cpu", "fp32", 200.0, hardware_rate=False)
    assert fields["peak_pct"] == 100.0 and fields["theoretical_pct"] is None
    assert ceilings.row_fields("cpu", "fp32", 120.0)["theoretical_pct"] == 80.0


def test_winograd_is_the_backend_with_an_effective_rate():
    from vggbench.bench.sweep import _hardware_rate

    assert not _hardware_rate("winograd")
    assert all(_hardware_rate(b) for b in ("eager", "compile", "onnxruntime", "openvino", "tensorrt"))


def test_a_theoretical_ceiling_below_a_measured_hardware_rate_is_set_aside():
    # 2026-12-06, AMD EPYC Zen 4 in a VM: /proc/cpuinfo's 2.60 GHz x 2 cores x 32 gave 166 GFLOP/s, onnxruntime ran
    # 214 and rows read theoretical_pct 125-133%
    ceilings = peak.Ceilings([{"device": "cpu", "precision": "fp32", "gflops_per_s": 146.0, "shape": "512x512x512"}],
                             {("cpu", "fp32"): {"gflops_per_s": 166.0, "source": "2 cores x 2.60 GHz"}})
    ceilings.see("cpu", "fp32", 300.0, "winograd fp32 channels_last batch 8", hardware_rate=False)
    assert ceilings.row_fields("cpu", "fp32", 150.0)["theoretical_pct"] == pytest.approx(150 / 166 * 100)
    ceilings.see("cpu", "fp32", 214.0, "onnxruntime fp32 contiguous batch 8")
    fields = ceilings.row_fields("cpu", "fp32", 214.0)
    assert fields["theoretical_pct"] is None and fields["theoretical_gflops_per_s"] is None
    assert fields["peak_pct"] == pytest.approx(214 / 300 * 100)
    (entry,) = ceilings.to_list()
    assert entry["theoretical_gflops_per_s"] == 166.0 and "onnxruntime fp32" in entry["theoretical_set_aside"]
