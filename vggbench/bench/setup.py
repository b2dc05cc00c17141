"""Each backend's settings for a suite, made once and used alike by `benchmark` (the sweep) and `loadgen`:
the fields a `Case` records and the `RunnerOptions` its runner is built with."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..backends import OrtSettings, OvSettings, RunnerOptions, Target
from ..backends.tensorrt import TrtSettings
from ..data.inputs import calibration_images
from ..exporters.quantize import QuantConfig
from .suite import Suite

ORT_BACKENDS = ("onnxruntime", "ort-tensorrt")


class BackendSetup:
    """The suite's backend settings, for the run's thread count and TF32 flag."""

    def __init__(self, suite: Suite, threads: int, tf32: bool) -> None:
        self.suite = suite
        self.ort = OrtSettings(threads=threads, optimization=suite.ort_optimization,
                               cudnn_conv_algo_search=suite.cudnn_conv_algo_search, tf32=tf32,
                               cuda_graph=suite.ort_cuda_graph)
        largest = max(b for g in suite.groups() for b in g.batch_sizes)
        self.trt = TrtSettings(max_batch=suite.trt_max_batch or largest, tf32=tf32)
        self.openvino = OvSettings(threads=threads, hint=suite.openvino_hint, streams=suite.openvino_streams,
                                   defaults=suite.openvino_defaults)

    def case_fields(self, backend: str, target: Target | Exception, settings: dict | None = None) -> dict:
        """The settings a case of `backend` records (a matrix table's own `settings` win over the suite's)."""
        s, settings = self.suite, settings or {}
        builds = isinstance(target, Target) and target.spec.builds_precisions  # TensorRT: its own settings
        ort = replace(self.ort, cuda_graph=settings.get("ort_cuda_graph", self.ort.cuda_graph))
        compiled = backend == "compile"
        return {"compile_mode": settings.get("compile_mode", s.compile_mode) if compiled else None,
                "compile_options": {"freezing": True} if compiled and s.compile_freezing else None,
                "ort_settings": ort.to_dict() if backend in ORT_BACKENDS else None,
                "trt_settings": self.trt.to_dict() if builds else None,
                "openvino_settings": self.openvino.to_dict() if backend == "openvino" else None}

    def runner_options(self, case, target: Target, loaded) -> RunnerOptions:
        """The options that build `case`'s runner; `loaded` gives calibration images to a backend that
        calibrates int8 and fp8 itself (TensorRT), chosen as onnx-int8's are."""
        ort = OrtSettings(**case.ort_settings) if case.ort_settings else self.ort
        return RunnerOptions(compile_mode=case.compile_mode, compile_options=case.compile_options, ort=ort,
                             tensorrt=self.trt, openvino=self.openvino, calibration=self._calibration(target, loaded))

    def _calibration(self, target: Target, loaded) -> torch.Tensor | None:
        if target.precision not in ("int8", "fp8") or not target.spec.builds_precisions:
            return None
        quant, w = QuantConfig(), loaded.weights
        return calibration_images(quant.calibration, quant.images, self.suite.image_size, w.mean, w.std, w.meta)[0]
