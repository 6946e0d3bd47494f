"""The benchforge package as data: its modules, their benchforge imports (function-local ones
included) and their public names, read with ``ast`` only (nothing is imported).

Used by tests/test_architecture.py (the guard on the import graph) and bench/architecture.py
(the before/after figures of the redesign: module sizes, function-local imports, cycles,
public names without a docstring).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "benchforge"


@dataclass
class Module:
    """One module of the package: its dotted name, line count and benchforge imports."""

    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # every benchforge module it imports
    local_imports: int = 0  # benchforge imports inside a function body
    eager: set[str] = field(default_factory=set)  # those imported when the module loads
    undocumented: list[str] = field(default_factory=list)  # public names without a docstring
    public: int = 0  # public functions, classes and methods
    classes: dict[str, set[str]] = field(default_factory=dict)  # documented methods per class


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``benchforge/stages/score.py`` -> ``benchforge.stages.score`` (``__init__`` -> package)."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module a (possibly relative) ``from`` import names."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _public(tree: ast.Module) -> tuple[int, list[str], dict[str, set[str]]]:
    """Public names of a module: module-level functions and classes whose name has no leading
    underscore, and the public methods of public classes.

    Returns:
        (count, names without a docstring, documented method names per class plus each
        class's base names under ``<Class>.__bases__``).
    """
    names: list[tuple[str, ast.AST]] = []
    documented: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and not node.name.startswith("_"):
            names.append((node.name, node))
            if isinstance(node, ast.ClassDef):
                methods = [item for item in node.body
                           if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
                documented[node.name] = {m.name for m in methods if ast.get_docstring(m)}
                bases[node.name] = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
                names += [(f"{node.name}.{m.name}", m) for m in methods
                          if not m.name.startswith("_")]
    missing = [n for n, node in names if ast.get_docstring(node) is None]  # type: ignore[arg-type]
    return len(names), missing, {**documented, **{f"{k}.__bases__": set(v)
                                                for k, v in bases.items()}}


def _inherited(modules: dict[str, Module]) -> None:
    """A method without a docstring that overrides a documented method of a base class in the
    package inherits its docstring (as ``inspect.getdoc`` does): it is not counted missing."""
    classes: dict[str, set[str]] = {}
    bases: dict[str, set[str]] = {}
    for module in modules.values():
        for key, value in module.classes.items():
            if key.endswith(".__bases__"):
                bases[key.removesuffix(".__bases__")] = value
            else:
                classes[key] = classes.get(key, set()) | value

    def documented_above(cls: str, method: str, seen: set[str]) -> bool:
        for base in bases.get(cls, ()):
            if base in seen:
                continue
            if method in classes.get(base, set()) or documented_above(base, method,
                                                                        seen | {base}):
                return True
        return False

    for module in modules.values():
        module.undocumented = [n for n in module.undocumented if "." not in n
                               or not documented_above(*n.split(".", 1), set())]


def read_package(package: Path = PACKAGE) -> dict[str, Module]:
    """Every module of ``package`` (``conf`` data excluded) with its benchforge imports."""
    modules: dict[str, Module] = {}
    all_names = {module_name(p, package) for p in package.rglob("*.py")}
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, str(path))
        module = Module(name, path, len(text.splitlines()))
        module.public, module.undocumented, module.classes = _public(tree)
        top_level = {id(n) for n in tree.body}
        stack: list[tuple[ast.AST, bool]] = [(n, False) for n in tree.body]
        while stack:  # walk, remembering whether we are inside a function body
            node, in_function = stack.pop()
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, path.name == "__init__.py")
                # ``from benchforge import x`` names the submodule x where one exists
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in all_names else base
                           for a in node.names]
            found = {t for t in targets if t == "benchforge" or t.startswith("benchforge.")}
            # ``import benchforge.a.b`` imports benchforge.a.b; keep the longest known module
            found = {_known(t, all_names) for t in found} - {name, ""}
            module.imports |= found
            if found and in_function and id(node) not in top_level:
                module.local_imports += 1
            elif not in_function:
                module.eager |= found
            inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.Lambda))
            stack += [(child, inside) for child in ast.iter_child_nodes(node)]
        modules[name] = module
    _inherited(modules)
    return modules


def _known(target: str, names: set[str]) -> str:
    while target and target not in names:
        target = target.rpartition(".")[0]
    return target


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {name: {i for i in m.imports if i in modules} for name, m in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)
