"""pseudocell.core stays free of heavy / optional infrastructure dependencies.

The check parses the source with ``ast`` (no import side effects) and follows imports of
other ``pseudocell`` modules, so a core module cannot pull a forbidden package in
through a helper module either.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pseudocell

FORBIDDEN = {"ray", "zarr", "mlflow", "typer", "fsspec", "pyarrow"}
PKG_ROOT = Path(pseudocell.__file__).resolve().parent
CORE = PKG_ROOT / "core"
CORE_MODULES = sorted(CORE.glob("*.py"))


def _module_name(path: Path) -> str:
    try:
        rel = path.relative_to(PKG_ROOT.parent).with_suffix("")
    except ValueError:  # a file outside the package (parser self-test)
        return path.stem
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute dotted names imported anywhere in the file (incl. inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call):
            # importlib.import_module("x") / __import__("x") with a literal name
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname in {"import_module", "__import__"} and node.args and \
                    isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def _resolve(name: str) -> Path | None:
    """File of a pseudocell module, or None (not a module of this package / not a file)."""
    parts = name.split(".")
    if parts[0] != "pseudocell":
        return None
    p = PKG_ROOT.parent.joinpath(*parts)
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return None


def _closure(start: Path) -> dict[Path, set[str]]:
    """Every pseudocell file reachable from ``start`` by imports, with its imports."""
    seen: dict[Path, set[str]] = {}
    todo = [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen[f] = _imports(f)
        for n in seen[f]:
            # importing a.b.c also runs a/__init__ and a/b/__init__
            parts = n.split(".")
            for i in range(1, len(parts) + 1):
                r = _resolve(".".join(parts[:i]))
                if r is not None and r not in seen:
                    todo.append(r)
    return seen


def test_core_modules_found():
    names = {p.stem for p in CORE_MODULES}
    assert {"targets", "peaks", "patches", "metrics", "pu", "ranker", "select", "unet",
            "detector"} <= names


def test_import_parser_sees_all_forms(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import zarr.storage as zs\nfrom pyarrow import parquet\n"
                 "def g():\n    import ray\n    from fsspec.core import url_to_fs\n"
                 "import importlib\nmlf = importlib.import_module('mlflow')\n"
                 "try:\n    import typer\nexcept ImportError:\n    pass\n")
    tops = {n.split(".")[0] for n in _imports(f)}
    assert FORBIDDEN <= tops


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_has_no_forbidden_imports(path):
    bad = {}
    for f, names in _closure(path).items():
        hits = sorted(n for n in names if n.split(".")[0] in FORBIDDEN)
        if hits:
            bad[str(f.relative_to(PKG_ROOT.parent))] = hits
    assert not bad, f"{path.name} reaches forbidden imports: {bad}"


def test_closure_follows_package_imports():
    reached = {p.relative_to(PKG_ROOT).as_posix() for p in _closure(CORE / "pu.py")}
    # pu -> detector -> unet, plus the package __init__ files run on import
    assert {"core/pu.py", "core/detector.py", "core/unet.py", "__init__.py",
            "core/__init__.py"} <= reached
