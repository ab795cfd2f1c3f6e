"""Flatten the hf_recurrent modules a model needs into one folder, as transformers' remote-code loader wants them.

``transformers.dynamic_module_utils`` finds the files of a remote model by a regular expression over each file:
only same-folder imports written ``from .name import ...`` are followed (``from . import name`` and ``..`` are
not). So every module reachable from the architecture's classes through relative imports (found with :mod:`ast`,
including imports inside functions) is written as ``<dotted path below hf_recurrent, dots as _>.py`` and each of
its imports of hf_recurrent code is rewritten mechanically:

* ``from ..common import RMSNorm as N``      -> ``from .modeling_common import RMSNorm as N``
* ``from . import reference`` (a submodule)  -> ``from .kernels_linear_attention_reference import __name__ as _x``
  (so that the loader sees and fetches the file) then ``from . import kernels_linear_attention_reference as
  reference``.

Optional packages (:data:`OPTIONAL_PACKAGES`, i.e. Triton) imported outside a ``try`` are wrapped in one:
``check_imports`` skips imports inside ``try`` blocks, so a Hub download does not demand Triton where it is not
installed; the modules that need it are imported only when the Triton backend was chosen, which requires it.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError

PACKAGE = "hf_recurrent"
OPTIONAL_PACKAGES = frozenset({"triton"})
_TRY_NODES = (ast.Try, getattr(ast, "TryStar", ast.Try))


@dataclass(frozen=True)
class _Module:
    name: str  # dotted, e.g. hf_recurrent.kernels.linear_attention.reference
    path: Path
    is_package: bool

    @property
    def flat_name(self) -> str:
        return "_".join(self.name.split(".")[1:])


def _find(name: str) -> _Module | None:
    """The source of module ``name`` if it is an hf_recurrent module (file or package), else None."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent that is not a package: ``name`` is an attribute
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    return _Module(name, path, path.name == "__init__.py")


def _absolute_base(module: _Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if node.level - 1 >= len(package):
        raise ExportError(f"{module.path}:{node.lineno}: relative import goes above the {PACKAGE} package")
    parts = package[: len(package) - (node.level - 1)]
    return ".".join(parts + (node.module.split(".") if node.module else []))


def _internal_imports(module: _Module, tree: ast.Module) -> list[tuple[ast.ImportFrom, str]]:
    """Every ``from X import ...`` of hf_recurrent code in ``tree`` with X made absolute."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    raise ExportError(
                        f"{module.path}:{node.lineno}: `import {alias.name}` cannot be flattened; "
                        f"use a relative `from ... import ...`"
                    )
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_base(module, node)
            if node.level > 0 or base == PACKAGE or base.startswith(PACKAGE + "."):
                found.append((node, base))
    return found


def _optional_imports(tree: ast.Module) -> list[ast.stmt]:
    """Imports of :data:`OPTIONAL_PACKAGES` that are not already inside a ``try`` block."""
    found = []

    def visit(node: ast.AST, in_try: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not in_try:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if node.__class__ is ast.Import or node.level == 0:
                if any(n.split(".")[0] in OPTIONAL_PACKAGES for n in names):
                    found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child, in_try or isinstance(node, _TRY_NODES))

    visit(tree, False)
    return found


def collect_modules(roots: list[str]) -> dict[str, _Module]:
    """All hf_recurrent modules reachable from ``roots`` (dotted names) through their hf_recurrent imports."""
    todo, seen = list(roots), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        module = _find(name)
        if module is None:
            raise ExportError(f"cannot find the source of module {name!r}")
        seen[name] = module
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for node, base in _internal_imports(module, tree):
            if base == PACKAGE:
                raise ExportError(f"{module.path}:{node.lineno}: an import from the {PACKAGE} package root would "
                                  "bring every architecture along; import from the module that defines the name")
            if _find(base) is None:
                raise ExportError(f"{module.path}:{node.lineno}: imported module {base!r} not found")
            todo.append(base)
            todo += [f"{base}.{a.name}" for a in node.names if _find(f"{base}.{a.name}") is not None]
    flat: dict[str, str] = {}
    for module in seen.values():
        other = flat.setdefault(module.flat_name, module.name)
        if other != module.name:
            raise ExportError(f"modules {other!r} and {module.name!r} would both be flattened to {module.flat_name}.py")
    return seen


def _rewrite_import(node: ast.ImportFrom, base: str, modules: dict[str, _Module], indent: str) -> list[str]:
    attrs, lines = [], []
    for alias in node.names:
        sub = modules.get(f"{base}.{alias.name}")
        if sub is None:
            attrs.append(alias.name if alias.asname is None else f"{alias.name} as {alias.asname}")
            continue
        bound = alias.asname or alias.name
        found = f"_{sub.flat_name}_name"
        lines.append(f"{indent}from .{sub.flat_name} import __name__ as {found}  # lets the loader find it")
        lines.append(f"{indent}from . import {sub.flat_name} as {bound}")
    if attrs:
        lines.insert(0, f"{indent}from .{modules[base].flat_name} import {', '.join(attrs)}")
    return lines


def _wrap_in_try(statement: list[str], indent: str) -> list[str]:
    """``statement`` (its lines without the indent) inside ``try: ... except ImportError: raise``."""
    return [
        f"{indent}try:  # optional package: transformers' check_imports skips imports inside try",
        *(f"{indent}    {line}" for line in statement),
        f"{indent}except ImportError:",
        f"{indent}    raise",
    ]


def flatten_module(module: _Module, modules: dict[str, _Module], header: str) -> str:
    """The source of ``module`` with its hf_recurrent imports pointing at the flat files, ``header`` on top."""
    text = module.path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(module.path))
    edits: list[tuple[ast.stmt, list[str]]] = []
    for node, base in _internal_imports(module, tree):
        edits.append((node, _rewrite_import(node, base, modules, _indent_of(lines, node, module))))
    for node in _optional_imports(tree):
        indent = _indent_of(lines, node, module)
        original = [line[len(indent):] for line in lines[node.lineno - 1 : node.end_lineno]]
        edits.append((node, _wrap_in_try(original, indent)))
    for node, new in sorted(edits, key=lambda e: e[0].lineno, reverse=True):
        lines[node.lineno - 1 : node.end_lineno] = new
    return header + "\n".join(lines) + "\n"


def _indent_of(lines: list[str], node: ast.stmt, module: _Module) -> str:
    first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
    indent = first[: node.col_offset]
    rest = last[node.end_col_offset :].strip()
    if indent.strip() or (rest and not rest.startswith("#")):
        raise ExportError(f"{module.path}:{node.lineno}: "
                          f"an import sharing its line with other code cannot be rewritten")
    return indent


def write_flat_modules(roots: list[str], dst: Path, version: str) -> dict[str, str]:
    """Write every module reachable from ``roots`` into ``dst``; returns dotted name -> flat module name."""
    modules = collect_modules(roots)
    root_dir = _find(PACKAGE).path.parent
    for module in modules.values():
        rel = module.path.relative_to(root_dir.parent).as_posix()
        header = f"# Flattened from {rel} of hf_recurrent {version} by `hf-recurrent export`; imports rewritten.\n"
        (dst / f"{module.flat_name}.py").write_text(flatten_module(module, modules, header), encoding="utf-8")
    return {name: module.flat_name for name, module in modules.items()}
