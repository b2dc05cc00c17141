"""Everything that can run a model, behind one small interface (`Runner`), and the registry that knows them.

A backend is one module that registers a `Backend` (capabilities and factory); a `Target` (backend, device,
precision, memory format) is resolved once by `resolve_target`, and `make_runner` builds its runner.
"""

from .load import eager_runner, load_runner, make_runner
from .onnxruntime import OrtSettings
from .openvino import OvSettings
from .registry import Backend, artifact_backends, backend_names, get_backend, register, resolve_backend
from .runner import Runner, RunnerOptions, TorchRunner
from .target import MEMORY_FORMATS, PRECISIONS, Target, resolve_target

__all__ = ["MEMORY_FORMATS", "PRECISIONS", "Backend", "OrtSettings", "OvSettings", "Runner", "RunnerOptions", "Target",
           "TorchRunner", "artifact_backends", "backend_names", "eager_runner", "get_backend", "load_runner",
           "make_runner", "register", "resolve_backend", "resolve_target"]
