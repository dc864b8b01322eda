"""pseudocell.core stays free of heavy / optional infrastructure dependencies.

The check parses the source with ``ast`` (no import side effects) and follows imports of
other ``pseudocell`` modules, so a core module cannot pull a forbidden package in
through a helper module either.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import pseudocell
from conftest import module_imports as _imports

FORBIDDEN = {"ray", "zarr", "mlflow", "typer", "fsspec", "pyarrow"}
PKG_ROOT = Path(pseudocell.__file__).resolve().parent
CORE = PKG_ROOT / "core"
CORE_MODULES = sorted(CORE.glob("*.py"))


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
