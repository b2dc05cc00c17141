"""The package's import rules, read off the source: a lower layer never imports a higher one, export knows no
datasets or runtimes, the core knows no backend, and no two modules import each other at import time."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vggbench"

# package -> the vggbench packages it may import (README, "Architecture")
ALLOWED = {
    "core": set(),
    "zoo": {"core"},
    "data": {"core"},
    "training": {"core", "zoo", "data"},
    "exporters": {"core", "zoo"},
    "backends": {"core", "zoo", "exporters"},
    "parity": {"core", "zoo", "data", "exporters", "backends"},
    "bench": {"core", "zoo", "data", "exporters", "backends", "parity"},
    "cli": {"core", "zoo", "data", "training", "exporters", "backends", "parity", "bench"},
    "__main__": {"cli"},  # `python -m vggbench` runs the CLI and nothing else
}
# finer rules inside an allowed edge: (importing package, imported module prefix) that must not appear
FORBIDDEN_MODULES = {
    ("backends", "vggbench.exporters."): "vggbench.exporters.manifest",  # backends read the manifest, nothing else
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """The vggbench modules an ImportFrom names (relative imports resolved; `from . import x` gives pkg.x)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("vggbench"):
        return []
    if node.module is None:  # from . import a, b
        return [f"{target}.{alias.name}" for alias in node.names]
    return [target]


def _imports(path: Path, module_level_only: bool = False) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module, is_package = _module_name(path), path.name == "__init__.py"
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # module-level statements, including those under if/try at the top level
        nodes = [n for top in tree.body for n in ast.walk(top) if not isinstance(top, (ast.FunctionDef, ast.ClassDef))]
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            found += [(t, node.lineno) for t in _resolve(module, node, is_package)]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("vggbench")]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    top = {_layer(_module_name(p)) for p in SOURCES} - {None}
    assert top <= set(ALLOWED), f"modules outside the layers of the README: {top - set(ALLOWED)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path):
    module = _module_name(path)
    layer = _layer(module)
    if layer is None:  # vggbench/__init__.py names its public functions as strings, imported on first use
        assert not _imports(path), "the package root imports nothing at import time (`vggbench --help` stays fast)"
        return
    wrong = []
    for target, line in _imports(path):
        other = _layer(target)
        if other is None or other == layer:
            continue
        if other not in ALLOWED[layer]:
            wrong.append(f"line {line}: {module} ({layer}) imports {target} ({other})")
        for (importer, prefix), allowed in FORBIDDEN_MODULES.items():
            if layer == importer and target.startswith(prefix) and target != allowed:
                wrong.append(f"line {line}: {module} imports {target}; {importer} may use only {allowed}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module_level_only", [True, False], ids=["at import time", "function-level imports too"])
def test_no_import_cycles(module_level_only):
    """No two modules import each other, at import time (which would fail) nor through imports made inside
    functions (which work, but tie two modules into one: issue 26 broke the last such circle)."""
    graph = {_module_name(p): {t for t, _ in _imports(p, module_level_only=module_level_only)} for p in SOURCES}
    graph = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def _planted(tmp_path: Path, monkeypatch, layer: str, text: str) -> Path:
    """A module `layer`/bad.py holding `text`, in a package the checkers read instead of vggbench's."""
    folder = tmp_path / "vggbench" / layer
    folder.mkdir(parents=True)
    bad = folder / "bad.py"
    bad.write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "vggbench")
    return bad


def test_the_rules_catch_an_uphill_import(tmp_path, monkeypatch):
    """The checker itself: a core module importing the bench layer is reported."""
    bad = _planted(tmp_path, monkeypatch, "core", "from ..bench import sweep\n")
    with pytest.raises(AssertionError, match="core.bad \\(core\\) imports vggbench.bench "):
        test_imports_run_down_the_layers(bad)


# the backends' generic face: the registry, targets, runners, settings, loading and what a profiler hook returns.
# bench, parity and the CLI reach a concrete backend only through these (issue 26): a backend is one module plus
# its line in registry.BUILTIN
GENERIC_BACKEND_MODULES = {"vggbench.backends", "vggbench.backends.registry", "vggbench.backends.target",
                           "vggbench.backends.runner", "vggbench.backends.settings", "vggbench.backends.load",
                           "vggbench.backends.profiling"}
# what the package vggbench.backends hands on from a concrete backend (a convenience for users and tests)
CONCRETE_BACKEND_NAMES = {"OrtSettings", "OvSettings"}


def _backend_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module, is_package = _module_name(path), path.name == "__init__.py"
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for target in _resolve(module, node, is_package):
                if not target.startswith("vggbench.backends"):
                    continue
                if target not in GENERIC_BACKEND_MODULES:
                    wrong.append(f"line {node.lineno}: {module} imports {target}")
                names = {a.name for a in node.names} & CONCRETE_BACKEND_NAMES
                if target == "vggbench.backends" and names:
                    wrong.append(f"line {node.lineno}: {module} imports {', '.join(sorted(names))} of a backend")
        elif isinstance(node, ast.Import):
            wrong += [f"line {node.lineno}: {module} imports {a.name}" for a in node.names
                      if a.name.startswith("vggbench.backends") and a.name not in GENERIC_BACKEND_MODULES]
    return wrong


@pytest.mark.parametrize("path", [p for p in SOURCES if _layer(_module_name(p)) in ("bench", "parity", "cli")],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_bench_and_parity_reach_backends_only_through_the_registry(path):
    wrong = _backend_imports(path)
    assert not wrong, "\n".join(wrong)


def test_the_registry_rule_catches_a_concrete_backend(tmp_path, monkeypatch):
    bad = _planted(tmp_path, monkeypatch, "bench",
                   "from ..backends.onnxruntime import OrtRunner\nfrom ..backends import OrtSettings, make_runner\n")
    assert _backend_imports(bad) == ["line 1: vggbench.bench.bad imports vggbench.backends.onnxruntime",
                                     "line 2: vggbench.bench.bad imports OrtSettings of a backend"]
