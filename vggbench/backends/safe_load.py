"""The one gate every artifact passes before a runtime opens it: nothing vggbench loads may execute code.

A manifest's sha256 proves only that a file is the one the manifest names, and anyone who can write the folder can
rewrite both (the digest is not a signature). So each format is inspected here, and anything vggbench's own exporter
never writes is refused with an ArtifactError, before torch, onnxruntime, OpenVINO or TensorRT reads a byte of it:

- pt2 (torch.export.load): every zip entry is one torch.export.save writes for a plain model; no weight or constant
  is pickled (torch unpickles those with weights_only=False), no custom or opaque object, no AOTInductor library,
  and the sample inputs load with weights_only=True (torch retries a failure with weights_only=False). In
  models/model.json the graph calls aten operators only (a target is resolved by getattr from `torch`, so
  `torch.serialization.os.system` would be callable), guards_code is empty (`.module()` execs it), and every
  symbolic expression is a plain arithmetic one (torch parses them with sympy.sympify, which evaluates Python).
- TorchScript (torch.jit.load): data.pkl and the other pickles are read by TorchScript's own unpickler, which
  imports no Python; the code/ files are compiled TorchScript, which can call any registered operator. So the
  entries are the ones torch.jit.save writes, and the code calls operators of the aten, prim and quantized
  namespaces only, none of those that read or write a named file (aten::save, aten::from_file, ...).
- ONNX (onnxruntime, OpenVINO, TensorRT): every external-data `location` is the plain name of a file that the
  manifest lists beside the model, never an absolute path, a `..` or a folder part.
- Every file of an artifact is a regular file in the export folder, not a symlink to somewhere else.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zipfile
from functools import lru_cache
from pathlib import Path

try:
    from ..core.errors import ArtifactError
except ImportError:  # the copy in a deploy folder, which its run.py loads without vggbench (bench/deploy.py)
    class ArtifactError(Exception):
        """An artifact refused before a runtime opens it."""

# pt2 entries below the archive's top folder (torch.export.save of one model named "model")
_PT2_ENTRIES = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                          r"|models/model\.json|data/sample_inputs/model\.pt"
                          r"|data/weights/model_weights_config\.json|data/constants/model_constants_config\.json"
                          r"|data/weights/weight_\d+|data/constants/tensor_\d+")
_PT2_KEYS = {"graph_module", "opset_version", "range_constraints", "schema_version", "verifiers", "torch_version",
             "guards_code"}
_PT2_TARGET = re.compile(r"torch\.ops\.aten\.\w+\.\w+|_operator\.getitem")
_SYMBOL = re.compile(r"[a-z]+\d+")
# a symbolic size as torch writes it (sympy's srepr or plain arithmetic): sympy constructors over integers, quoted
# symbol names and their assumptions. No dot, bracket, underscore or other string, so sympify's eval reaches nothing
# but these constructors
_EXPR_TOKEN = re.compile(r"'[a-z]+\d+'|[A-Za-z]\w*|\d+|[\s+\-*/%(),=]")
_EXPR_NAMES = {"Symbol", "Integer", "Rational", "Add", "Mul", "Pow", "Max", "Min", "True", "False", "positive",
               "integer", "nonnegative", "FloorDiv", "CeilDiv", "Mod", "PythonMod", "ModularIndexing", "CleanDiv",
               "CeilToInt", "FloorToInt", "TruncToInt", "IntTrueDiv", "PowByNatural"}

# TorchScript entries below the archive's top folder (torch.jit.save)
_TS_ENTRIES = re.compile(r"data\.pkl|constants\.pkl|version|\.data/version|byteorder|\.data/serialization_id"
                         r"|data/\d+|constants/\d+|traced_inputs\.pkl|traced_inputs/\d+"
                         r"|code/__torch__/[\w/]+\.py(\.debug_pkl)?")
_TS_NAMESPACES = {"aten", "prim", "quantized"}


def _refuse(path: Path, why: str):
    raise ArtifactError(f"{path} is refused: {why}; vggbench loads only what its exporter writes, since loading "
                        f"anything else could run code (export again)")


def check_regular_file(path: Path, folder: Path) -> None:
    """`path` is a regular file directly in `folder`, reached without a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        _refuse(path, "it is a symlink or not a regular file")
    if path.parent.resolve() != folder.resolve():
        _refuse(path, "it is not in the export folder")


def _entries(path: Path, allowed: re.Pattern) -> tuple[zipfile.ZipFile, str]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArtifactError(f"{path} is not a readable archive ({e})") from None
    names = archive.namelist()
    top = names[0].split("/", 1)[0] if names else ""
    for name in names:
        head, _, rest = name.partition("/")
        if head != top or not allowed.fullmatch(rest):
            archive.close()
            _refuse(path, f"it holds {name!r}, which vggbench's exporter never writes")
    return archive, top


def _json(archive: zipfile.ZipFile, name: str, path: Path):
    try:
        return json.loads(archive.read(name))
    except (KeyError, ValueError) as e:
        _refuse(path, f"{name} is missing or not JSON ({e})")


def _walk(value, key: str = ""):
    """Every (key, value) pair of a JSON document, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, key)


def _plain_expression(expr: str) -> bool:
    tokens = _EXPR_TOKEN.findall(expr)
    return "".join(tokens) == expr and all(
        t in _EXPR_NAMES or _SYMBOL.fullmatch(t) or not (t[0].isalpha() or t[0] == "_") for t in tokens)


def check_pt2(path: Path) -> None:
    """A model.pt2 that torch.export.load can open without unpickling or evaluating anything."""
    import io

    import torch

    archive, top = _entries(path, _PT2_ENTRIES)
    with archive:
        for config_name in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
            config = _json(archive, f"{top}/{config_name}", path)
            entries = config.get("config") if isinstance(config, dict) else None
            if not isinstance(entries, dict):
                _refuse(path, f"{config_name} is not a payload config")
            for fqn, meta in entries.items():
                if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
                    _refuse(path, f"{config_name} marks {fqn!r} as pickled")
                if not re.fullmatch(r"(weight|tensor)_\d+", str(meta.get("path_name"))):
                    _refuse(path, f"{config_name} stores {fqn!r} as {meta.get('path_name')!r}, not a plain tensor")
        model = _json(archive, f"{top}/models/model.json", path)
        if not isinstance(model, dict) or set(model) - _PT2_KEYS:
            _refuse(path, "models/model.json is not a plain exported program")
        if model.get("guards_code"):
            _refuse(path, "models/model.json carries guards_code, which torch executes")
        for key in model.get("range_constraints") or {}:
            if not _SYMBOL.fullmatch(str(key)):
                _refuse(path, f"range constraint {key!r} is not a symbol")
        for key, value in _walk(model):
            if key == "target" and isinstance(value, str) and not _PT2_TARGET.fullmatch(value):
                _refuse(path, f"its graph calls {value!r}, not an aten operator")
            if key == "expr_str" and not (isinstance(value, str) and _plain_expression(value)):
                _refuse(path, f"its graph holds the expression {value!r}, not plain arithmetic over sizes")
        name = f"{top}/data/sample_inputs/model.pt"
        if name in archive.namelist():
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception as e:  # any refusal or parse error: torch would retry with weights_only=False
                _refuse(path, f"its sample inputs are not plain tensors ({type(e).__name__})")


@lru_cache(maxsize=1)
def _file_operators() -> frozenset[str]:
    """The operators that read or write a file they are given by name (aten::save, aten::from_file, ...)."""
    import torch

    names = set()
    for schema in torch._C._jit_get_all_schemas():
        if any(str(a.type) == "str" and re.search(r"file|path|dir", a.name) for a in schema.arguments):
            names.add(schema.name.split("::")[-1])
    return frozenset(names)


def check_torchscript(path: Path) -> None:
    """A model.ts whose code calls only aten, prim and quantized operators, none of them file I/O."""
    archive, top = _entries(path, _TS_ENTRIES)
    with archive:
        for name in archive.namelist():
            if not name.endswith(".py"):
                continue
            code = archive.read(name).decode("utf-8", errors="replace")
            for namespace, op in re.findall(r"\bops\.(\w+)\.(\w+)", code):
                if namespace not in _TS_NAMESPACES or op in _file_operators():
                    _refuse(path, f"{name} calls ops.{namespace}.{op}")
            for op in re.findall(r"\btorch\.(\w+)\s*\(", code):
                if op in _file_operators():
                    _refuse(path, f"{name} calls torch.{op}, which reads or writes a file")


def check_onnx(path: Path, listed: set[str]) -> None:
    """A model.onnx whose external data are files the manifest lists beside it."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # a damaged protobuf raises its own types
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})") from None
    tensors = list(model.graph.initializer)
    tensors += [a.t for node in model.graph.node for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location or location != Path(location).name or location in (".", "..") or location not in listed:
            _refuse(path, f"its tensor {tensor.name!r} reads external data from {location!r}, not a file of this "
                          f"export")


_CHECKS = {".pt2": check_pt2, ".ts": check_torchscript}


def check_artifact(entry: dict, export_dir: str | os.PathLike) -> None:
    """Inspect every file of a manifest entry (already checked against its sha256) before a runtime opens it."""
    folder = Path(export_dir)
    names = {f["file"] for f in entry["files"]}
    for name in names:
        check_regular_file(folder / name, folder)
    main = folder / entry["files"][0]["file"]
    if main.suffix == ".onnx":
        check_onnx(main, names)
    elif main.suffix in _CHECKS:
        _CHECKS[main.suffix](main)
    else:
        _refuse(main, f"vggbench reads no {main.suffix or 'extensionless'} artifact")
