"""vggbench: build, train, export, verify and benchmark every VGG of the paper.

The public functions are imported lazily so that `import vggbench` (and `vggbench --help`) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "get_spec": "zoo.specs", "list_models": "zoo.specs", "ModelOptions": "zoo.specs", "ModelSpec": "zoo.specs",
    "build": "zoo.models", "VGG": "zoo.models",
    "load_model": "zoo.weights", "save_weights": "zoo.weights", "LoadedModel": "zoo.weights",
    "profile": "zoo.profiling",
    "load_data": "data.datasets",
    "train": "training.loop", "TrainConfig": "training.config", "TrainResult": "training.loop",
    "evaluate": "training.evaluation", "EvalConfig": "training.config", "EvalResult": "training.evaluation",
    "evaluate_protocols": "training.protocols", "ProtocolReport": "training.protocols",
    "dense_model": "zoo.dense",
    "export": "parity.checked",
    "verify": "parity.verify", "VerifyReport": "parity.verify",
    "profile_layers": "parity.layers", "LayersReport": "parity.layers", "plan_int8": "parity.plan",
    "benchmark": "bench.sweep", "BenchRun": "bench.results", "read_run": "bench.results",
    "results_frame": "bench.results",
    "BenchResult": "bench.rows", "Suite": "bench.suite", "load_suite": "bench.suite",
    "loadgen": "bench.loadgen", "LoadgenSettings": "bench.scenarios", "SutSettings": "bench.scenarios",
    "VggbenchError": "core.errors",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'vggbench' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = list(_EXPORTS)
