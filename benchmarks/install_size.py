"""The size of an install, for the README: run it with the Python of the venv to measure, e.g.
`/tmp/lean/bin/python benchmarks/install_size.py`. It sums the files each installed distribution lists in its
RECORD, splits the total into what torch and torchvision bring (they and their dependencies, the closure of
their requirements) and the rest, and lists the largest of the rest; then, for each extra of vggbench whose
packages are installed, what it adds to the default install."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

MB = 1e6


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sizes() -> dict[str, int]:
    found = {}
    for dist in metadata.distributions():
        total = 0
        for f in dist.files or []:
            path = Path(dist.locate_file(f))
            if path.is_file():
                total += path.stat().st_size
        found[_key(dist.metadata["Name"])] = total
    return found


def closure(roots: list[str], extras: tuple[str, ...] = ("",)) -> set[str]:
    """The distributions `roots` need, transitively: requirements with their markers evaluated here, and a
    requirement's extras followed as pip follows them (torch names the CUDA libraries as extras of cuda-toolkit)."""
    from packaging.requirements import Requirement

    seen, done, todo = set(), set(), [(_key(r), e) for r in roots for e in extras]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        seen.add(name)  # a distribution that is not installed is named too (its own requirements unknown)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo.append((_key(req.name), ""))
                todo.extend((_key(req.name), e) for e in req.extras)
    return seen


def main() -> None:
    found = sizes()
    tooling = {"pip", "setuptools", "wheel"}
    torch = (closure(["torch", "torchvision"]) - tooling) & set(found)
    rest = {name: size for name, size in found.items() if name not in torch and name not in tooling}
    print(f"python: {sys.executable}")
    print(f"distributions: {len(found)} ({len(torch)} torch + torchvision and their dependencies)")
    print(f"total: {sum(found.values()) / MB:.0f} MB")
    print(f"torch + torchvision with their dependencies: {sum(found.get(n, 0) for n in torch) / MB:.0f} MB")
    print(f"everything else (pip, setuptools left out): {sum(rest.values()) / MB:.0f} MB")
    for name, size in sorted(rest.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {name:28s} {size / MB:7.1f} MB")
    default = closure(["vggbench"])
    extras = [e for e in metadata.metadata("vggbench").get_all("Provides-Extra") or []]
    for extra in extras:
        added = closure(["vggbench"], ("", extra)) - default - tooling
        missing = [n for n in added if n not in found]
        what = f"{sum(found.get(n, 0) for n in added) / MB:.0f} MB in {len(added)} distributions"
        print(f"[{extra}]: {what}" + (f" (not installed here: {', '.join(sorted(missing))})" if missing else ""))


if __name__ == "__main__":
    main()
