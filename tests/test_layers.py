"""The package's layer order: every module imports pseudocell modules of its own package
or of lower layers only (checked on the source, imports inside functions included), and
Ray and MLflow stay in the packages that own them."""
from __future__ import annotations

from pathlib import Path

import pytest

import pseudocell
from conftest import module_imports, module_name

PKG = Path(pseudocell.__file__).resolve().parent

#: Lowest first. A package may import itself and anything in a lower layer.
LAYERS = [
    {"errors", "", "runtime"},     # "" = the package root (its version); process settings
    {"core", "storage"},           # pure algorithms; URIs and stores
    {"config"},
    {"data"},                      # readers and writers of images and points
    {"validation"},                # the one place that checks user inputs
    {"demo", "stages"},            # the demo's inputs; stage functions and modes as data
    {"actors", "results"},         # Ray actor classes; the reader of a run's results
    {"orchestrator"},              # the engine: run directory, loop, executors, faults
    {"tracking", "inference", "human"},  # MLflow (driver only); detect on new images;
                                   # suggest / ingest a person's review
    {"tune_spaces", "bench", "napari"},  # sweeps; the quality protocol; the napari plugin
    {"cli"},
    {"__main__"},
]
LAYER = {pkg: k for k, layer in enumerate(LAYERS) for pkg in layer}
#: third-party packages allowed only in these pseudocell packages
OWNERS = {"ray": {"actors", "orchestrator", "tune_spaces"}, "mlflow": {"tracking"},
          "napari": {"napari"}, "qtpy": {"napari"}}
FILES = sorted(PKG.rglob("*.py"))


def _package(dotted: str) -> str:
    """``pseudocell.stages.loop`` → ``stages``; ``pseudocell`` → ``""``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer():
    found = {_package(module_name(f)) for f in FILES}
    assert found == set(LAYER), f"unplaced: {sorted(found - set(LAYER))}"


def _violations(path: Path, me: str) -> list[str]:
    """Imports of the file ``path`` of package ``me`` that break the layer order."""
    bad = []
    for name in module_imports(path):
        top = name.split(".")[0]
        if top == "pseudocell":
            other = _package(name)
            if other != me and other in LAYER and LAYER[other] >= LAYER[me]:
                bad.append(name)
        elif top in OWNERS and me not in OWNERS[top]:
            bad.append(name)
    return sorted(bad)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(PKG).as_posix())
def test_module_imports_only_lower_layers(path):
    me = _package(module_name(path))
    bad = _violations(path, me)
    assert not bad, f"{module_name(path)} (layer {LAYER[me]}: {me or 'root'}) imports {bad}"


def test_the_check_sees_violations(tmp_path):
    """The engine imported by a core module, Ray by a stage, MLflow by the engine."""
    f = tmp_path / "probe.py"
    f.write_text("import mlflow\ndef g():\n    from pseudocell.orchestrator.run import "
                 "run_loop\n    import ray.tune\n    from pseudocell.stages import loop\n")
    assert _violations(f, "core") == ["mlflow", "pseudocell.orchestrator.run",
                                      "pseudocell.orchestrator.run.run_loop",
                                      "pseudocell.stages", "pseudocell.stages.loop",
                                      "ray.tune"]
    assert _violations(f, "orchestrator") == ["mlflow"]
    assert _violations(f, "tune_spaces") == ["mlflow"]
