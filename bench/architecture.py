"""The shape of the package in four numbers per module, read with ``ast`` (nothing imported):

    python bench/architecture.py [--package benchforge] [--top 12]

Prints the module sizes (lines; the largest ``--top``), the benchforge imports made inside a
function body, the import cycles (function-local imports included) and the public names
(functions, classes, their public methods) without a docstring. The redesign of issue #14
gives its before/after figures from this script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _imports import cycles, read_package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path,
                        default=Path(__file__).resolve().parents[1] / "benchforge")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    modules = read_package(args.package.resolve())
    by_size = sorted(modules.values(), key=lambda m: -m.lines)
    print(f"modules: {len(modules)}, lines: {sum(m.lines for m in modules.values())}")
    for m in by_size[: args.top]:
        print(f"  {m.lines:5d}  {m.name}")
    local = [(m.local_imports, m.name) for m in modules.values() if m.local_imports]
    print(f"function-local benchforge imports: {sum(n for n, _ in local)} "
          f"in {len(local)} modules")
    for n, name in sorted(local, reverse=True)[: args.top]:
        print(f"  {n:5d}  {name}")
    found = cycles(modules)
    print(f"import cycles (strongly connected components): {len(found)}")
    for component in found:
        print(f"  {len(component)} modules: {' '.join(component)}")
    public = sum(m.public for m in modules.values())
    missing = sum(len(m.undocumented) for m in modules.values())
    print(f"public names without a docstring: {missing} of {public}")


if __name__ == "__main__":
    main()
