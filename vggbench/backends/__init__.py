"""Everything that can run a model, behind one small interface (`Runner`), and the registry that knows them.

A backend is one module that registers a `Backend` (capabilities, settings and factory); a `Target` (backend,
device, precision, memory format) is resolved once by `resolve_target`, and `make_runner` builds its runner.

The names below are imported on first use, so that the settings machinery (vggbench.backends.settings, which
the CLI's suites need) does not import torch with the package.
"""

from __future__ import annotations

import importlib

_WHERE = {"eager_runner": "load", "load_runner": "load", "make_runner": "load", "OrtSettings": "onnxruntime",
          "OvSettings": "openvino", "Backend": "registry", "artifact_backends": "registry",
          "backend_names": "registry", "get_backend": "registry", "register": "registry",
          "resolve_backend": "registry", "Runner": "runner", "RunnerOptions": "runner", "TorchRunner": "runner",
          "MEMORY_FORMATS": "target", "PRECISIONS": "target", "Target": "target", "resolve_target": "target"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
