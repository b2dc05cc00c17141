"""The export cache of a benchmark run: parity-checked export folders, made once and reused across runs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..backends import Target
from ..core.errors import UnsupportedError, VggbenchError, one_line
from ..core.extras import MissingExtra
from ..core.fileio import exclusive
from ..exporters.manifest import INT8_FORMAT, artifact, read_manifest
from ..exporters.manifest import SCHEMA_VERSION as MANIFEST_SCHEMA
from ..exporters.quantize import QuantConfig
from ..parity.checked import export
from ..zoo.weights import LoadedModel

DEFAULT_EXPORT_CACHE = Path("exports") / ".cache"
INT8_NEEDS_TRAINED_WEIGHTS = ("int8 and fp8 are offered only with their measured top-1 agreement with fp32 on real "
                              "images, which random weights do not have: give trained weights (--weights FILE or "
                              "imagenet)")


class ExportFailed(Exception):
    """An export that a case needed could not be made (or was refused): the case's status is export_failed."""


class ExportCache:
    """Parity-checked export folders under `root`, one per (model, weights, image size, precision, format),
    reused while their manifest and checksums say they are what is asked for."""

    def __init__(self, root: str | os.PathLike, model: LoadedModel, image_size: int,
                 dense_size: int | None = None) -> None:
        # dense_size: exports of the dense form, equal to the model at that size (and run at any size)
        self.root, self.model, self.dense_size = Path(root), model, dense_size
        self.image_size = dense_size or image_size  # the size the export is made (and checked) at
        self._failed: dict[str, str] = {}

    def key(self, fmt: str, precision: str, quant: QuantConfig | None = None) -> str:
        ident = {"model": self.model.name, "options": self.model.options.to_dict(),
                 "state_sha256": self.model.fingerprint, "image_size": self.image_size, "precision": precision,
                 "format": fmt, "schema": MANIFEST_SCHEMA}
        if self.dense_size:
            ident["dense"] = True
        if fmt == INT8_FORMAT and quant is not None and quant != QuantConfig():  # the default keeps its old key
            ident["quantization"] = quant.to_dict()
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        dense = "-dense" if self.dense_size else ""
        return f"{self.model.name}-{self.image_size}{dense}-{precision}-{fmt}-{digest}"

    @staticmethod
    def quant(target: Target, settings=None) -> QuantConfig | None:
        """How the onnx-int8 export of `target` is made, as its backend's settings say (None: the default)."""
        wanted = settings.quantization() if settings is not None and target.artifact == INT8_FORMAT else None
        return None if wanted is None else QuantConfig.from_dict(wanted)

    def path(self, target: Target, settings=None) -> Path:
        """Where the export folder of `target` (run with its backend's `settings`) is, made or not."""
        return self.root / self.key(target.artifact, target.export_precision, self.quant(target, settings))

    def folder(self, target: Target, settings=None) -> Path:
        """The export folder for a target of an artifact backend (amp and bf16 run an fp32 export; int8 runs
        model.int8.onnx, quantized from the fp32 ONNX export as the backend's `settings` say and verified by class
        agreement on real images, which random weights cannot have: for them int8 is refused before anything is
        made)."""
        if target.precision in ("int8", "fp8") and self.model.weights.source == "random":
            raise UnsupportedError(INT8_NEEDS_TRAINED_WEIGHTS)  # by design, not a failed export: `run` exits 0
        fmt = target.artifact
        exported = target.export_precision
        quant = self.quant(target, settings)
        key = self.key(fmt, exported, quant)
        if key in self._failed:
            raise ExportFailed(self._failed[key])
        folder = self.root / key
        # runs that share the cache take turns: one makes the export, the others wait and then reuse it (the
        # export's own lock on the folder would refuse them instead)
        with exclusive(self.root / f"{key}.making", wait=True):
            if not self._usable(folder, fmt, exported):
                try:
                    export(self.model, folder, formats=["onnx", fmt] if fmt == INT8_FORMAT else [fmt],
                           image_size=self.image_size, precision=exported, force=True, verify=True,
                           dense=bool(self.dense_size), quant=quant)
                except MissingExtra:  # a package this install left out (int8 calibration images): unsupported here
                    raise
                except Exception as e:  # any exporter failure is this case's status, not a crash
                    self._failed[key] = str(e) if isinstance(e, VggbenchError) else one_line(e)
                    raise ExportFailed(self._failed[key]) from e
        return folder

    def _usable(self, folder: Path, fmt: str, precision: str) -> bool:
        try:
            m = read_manifest(folder)
            artifact(m, fmt, folder)  # every file against its sha256
        except VggbenchError:
            return False
        parity = m.parity or ()
        return (m.model.name == self.model.name and m.weights.state_sha256 == self.model.fingerprint
                and m.input.image_size == self.image_size and m.precision == precision
                and (m.dense is not None) == bool(self.dense_size)
                and bool(parity) and all(p["passed"] for p in parity))
