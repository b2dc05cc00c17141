"""What a backend's settings are: a `Settings` dataclass of its own, registered with the backend, from which its
command-line options (--<prefix>-<field>), its suite table ([backend.<name>]), the settings its result rows record
and the validation of every value all come. No torch import here: the CLI builds options from these classes.

Two kinds of field: the user's (options and suite keys) and the run's (`context`: the thread count and the TF32
flag of the run, which the run fills in so that a row records what the backend was really given).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from ..core.errors import ConfigError
from ..core.settings import Settings, setting
from ..exporters.manifest import QUANT_METHODS


@dataclass(frozen=True)
class RunContext:
    """What the run, not the user, decides for every backend: the intra-op threads, TF32 for CUDA fp32, and the
    largest batch the runner will be given (TensorRT's optimisation profile is built for it)."""

    threads: int | None = None
    tf32: bool = False
    max_batch: int | None = None


@dataclass(frozen=True, kw_only=True)
class BackendSettings(Settings):
    """Base of a backend's settings. `context` names the fields that the run fills in (see RunContext); the other
    fields are the user's."""

    context: ClassVar[tuple[str, ...]] = ()
    _labels: ClassVar[str] = "key"  # messages name the field; the caller adds the backend

    @classmethod
    def user_fields(cls) -> tuple[str, ...]:
        """The fields that are options and suite keys."""
        return tuple(name for name in cls.setting_names() if name not in cls.context)

    def with_run(self, run: RunContext) -> BackendSettings:
        """These settings with the run's values in the context fields."""
        return dataclasses.replace(self, **{name: getattr(run, name) for name in self.context})

    def variant(self) -> str:
        """What sets cases of these settings apart in a table, when a suite times several settings of one backend
        ("max-autotune" for torch.compile's mode); "" for the default."""
        return ""

    def quantization(self) -> dict | None:
        """How the onnx-int8 export its int8 cases load is made (fields of vggbench.exporters.quantize.QuantConfig);
        None: vggbench's default quantization."""
        return None


INT8_PLANS = ("all", "auto")


@dataclass(frozen=True, kw_only=True)
class Int8ExportSettings(BackendSettings):
    """For a backend whose int8 runs model.int8.onnx (onnxruntime, OpenVINO): how that export is quantized, so that
    `vggbench tune` can search it as a knob of the backend. Each quantization is its own export in the export cache
    (calibrated on the images of the weights' own dataset, and judged by top-1 agreement like every int8 export), and
    each row records the one it ran. Other precisions ignore these fields."""

    int8_method: str = setting("minmax", "int8: how model.int8.onnx is calibrated: minmax, percentile or entropy "
                                         "(onnxruntime's quantizer), or nncf (NNCF's post-training quantization).",
                               choices=QUANT_METHODS)
    int8_plan: str = setting("all", "int8: all weight layers in int8, or auto: the mixed plan (the fewest layers "
                                    "kept in fp32 that bring top-1 agreement with fp32 to 99%).", choices=INT8_PLANS)
    int8_reduce_range: bool = setting(False, "int8: 7-bit weights (export's --reduce-range), onnxruntime's advice "
                                             "for x86 CPUs without VNNI, where uint8 x int8 products can saturate "
                                             "in int16 (on an AVX2 EPYC every-layer int8 failed parity without it).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.int8_method == "nncf" and self.int8_plan == "auto":
            raise ConfigError("int8_plan auto (layers kept in fp32) needs onnxruntime's quantizer (minmax, percentile, "
                              "entropy), not nncf")
        if self.int8_method == "nncf" and self.int8_reduce_range:
            raise ConfigError("int8_reduce_range (7-bit weights) is onnxruntime's quantizer's (minmax, percentile, "
                              "entropy), not nncf's")

    def quantization(self) -> dict | None:
        if (self.int8_method, self.int8_plan, self.int8_reduce_range) == ("minmax", "all", False):
            return None
        return {"method": self.int8_method, "keep_fp32": ["auto"] if self.int8_plan == "auto" else [],
                **({"reduce_range": True} if self.int8_reduce_range else {})}


class SettingsMap(Mapping):
    """backend -> its settings object: immutable and hashable, so that suites (frozen dataclasses) can hold it;
    to_dict() gives {backend: {field: value}} for JSON."""

    def __init__(self, items: Mapping[str, BackendSettings] | None = None) -> None:
        self._items = dict(sorted((items or {}).items()))

    def __getitem__(self, key: str) -> BackendSettings:
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return f"SettingsMap({self._items!r})"

    def to_dict(self) -> dict:
        return {name: settings.to_dict() for name, settings in self._items.items()}
