"""vggbench: build, train, export, verify and benchmark every VGG of the paper.

The public functions are imported lazily so that `import vggbench` (and `vggbench --help`) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "get_spec": "specs", "list_models": "specs", "ModelOptions": "specs", "ModelSpec": "specs",
    "build": "models", "VGG": "models",
    "load_model": "weights", "save_weights": "weights", "LoadedModel": "weights",
    "profile": "profiling",
    "train": "train", "TrainConfig": "train", "TrainResult": "train",
    "evaluate": "evaluation", "EvalConfig": "evaluation", "EvalResult": "evaluation",
    "load_data": "data",
    "benchmark": "sweep", "BenchRun": "results", "read_run": "results", "BenchResult": "bench",
    "Suite": "suite", "load_suite": "suite",
    "VggbenchError": "errors",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        # `train` is a module and its function: the module is callable, and keeps `vggbench.train.X` working
        return module if name == _EXPORTS[name] else getattr(module, name)
    raise AttributeError(f"module 'vggbench' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = list(_EXPORTS)
