"""Each backend's settings for a suite, made once and used alike by `benchmark` (the sweep) and `loadgen`:
the fields a `Case` records and the `RunnerOptions` its runner is built with. Nothing here names a backend:
what a backend's settings are, and which fields the run fills in, its settings class says."""

from __future__ import annotations

import torch

from ..backends import RunnerOptions, Target
from ..backends.registry import get_backend
from ..backends.settings import RunContext
from ..data.inputs import calibration_images
from ..exporters.quantize import QuantConfig
from .suite import Suite


class BackendSetup:
    """The suite's backend settings, for the run's thread count and TF32 flag; max_batch: the largest batch a
    runner is given (TensorRT's profile), when not the suite's largest batch size."""

    def __init__(self, suite: Suite, threads: int, tf32: bool, max_batch: int | None = None) -> None:
        self.suite = suite
        largest = max_batch or max(b for g in suite.groups() for b in g.batch_sizes)
        self.run = RunContext(threads=threads, tf32=tf32, max_batch=largest)

    def settings(self, backend: str, settings=None):
        """The settings `backend`'s cases run with (a group's own, else the suite's), the run's fields filled in;
        None for a backend without settings."""
        spec = get_backend(backend)
        if settings is None:
            settings = self.suite.backend.get(spec.settings_name) or (spec.settings() if spec.settings else None)
        return None if settings is None else settings.with_run(self.run)

    def case_fields(self, backend: str, target: Target | Exception, settings=None) -> dict:
        """The settings a case of `backend` records, and the variant its tables show (a matrix table's own
        settings win over the suite's)."""
        settings = self.settings(backend, settings)
        return {"backend_settings": None if settings is None else settings.to_dict(),
                "variant": "" if settings is None else settings.variant()}

    def runner_options(self, case, target: Target, loaded) -> RunnerOptions:
        """The options that build `case`'s runner; `loaded` gives calibration images to a backend that
        calibrates int8 and fp8 itself (TensorRT), chosen as onnx-int8's are."""
        settings = self.case_settings(case, target)
        return RunnerOptions({} if settings is None else {target.spec.settings_name: settings},
                             calibration=self._calibration(target, loaded))

    @staticmethod
    def case_settings(case, target: Target):
        """The settings object `case` records (None for a backend without settings)."""
        spec = target.spec
        if spec.settings is None or case.backend_settings is None:
            return None
        return spec.settings(**case.backend_settings)

    def _calibration(self, target: Target, loaded) -> torch.Tensor | None:
        if target.precision not in ("int8", "fp8") or not target.spec.calibrates:
            return None
        quant, w = QuantConfig(), loaded.weights
        return calibration_images(quant.calibration, quant.images, self.suite.image_size, w.mean, w.std, w.meta)[0]
