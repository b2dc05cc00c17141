"""Optional packages: each belongs to one extra of the install (pyproject.toml's optional-dependencies), and a
feature that needs a missing one says, in one line, which extra brings it (`require`)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import UnsupportedError

# top-level module -> (the distribution that provides it, the extra of vggbench that installs it)
EXTRAS = {
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "openvino"),
    "mlperf_loadgen": ("mlcommons-loadgen", "loadgen"),
    "sklearn": ("scikit-learn", "data"),
    "pandas": ("pandas", "pandas"),
    "pyarrow": ("pyarrow", "pandas"),
    "ray": ("ray", "fleet"),
    "optuna": ("optuna", "tune"),
    "tensorrt": ("tensorrt-cu13", "tensorrt"),
    "psycopg": ("psycopg", "postgres"),
}


class MissingExtra(UnsupportedError):
    """A feature's optional package is not installed (or cannot be imported). An UnsupportedError, so that a
    sweep row whose backend lacks its package is a row that says why, as for any other combination that cannot
    run here; on its own it is one `error:` line, exit 2."""

    def __init__(self, message: str, module: str, extra: str) -> None:
        self.module, self.extra = module, extra
        super().__init__(message)


def install_hint(extra: str) -> str:
    """The command that adds an extra to an installed vggbench."""
    if extra == "gpu":
        # onnxruntime-gpu and the default install's onnxruntime write the same package: the GPU wheel must win
        return 'pip install "vggbench[gpu]" && pip install --force-reinstall --no-deps onnxruntime-gpu'
    return f'pip install "vggbench[{extra}]"'


def require(module: str, feature: str) -> ModuleType:
    """Import `module` (e.g. "openvino", "sklearn.datasets"), or raise MissingExtra naming `feature` (e.g. "the
    openvino backend") and the extra to install. A package that is there but fails to import (a broken wheel, a
    missing shared library) says so too, with the reason, since reinstalling the extra is then the fix."""
    top = module.split(".")[0]
    dist, extra = EXTRAS[top]
    try:
        importlib.import_module(top)  # first: a submodule already imported would be found without its package
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == top or importlib.util.find_spec(top) is None:
            raise MissingExtra(f"{feature}: {dist} is not installed; {install_hint(extra)}",
                               top, extra) from None
        raise _broken(feature, dist, extra, top, e) from None
    except ImportError as e:
        raise _broken(feature, dist, extra, top, e) from None


def _broken(feature: str, dist: str, extra: str, top: str, e: ImportError) -> MissingExtra:
    reason = " ".join(str(e).split())
    return MissingExtra(f"{feature}: {dist} is installed but cannot be imported ({type(e).__name__}: {reason}); "
                        f"reinstall it: {install_hint(extra)}", top, extra)
