"""The napari side of the plugin, headless: the manifest, the dock widget on napari's
viewer model (the layers a viewer shows, without an OpenGL canvas, which offscreen CI
machines lack), the writer. Runs where napari and Qt are installed (`pip install
'.[napari]'`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from conftest import make_review  # noqa: E402

from pseudocell.human.files import read_manifest_csv  # noqa: E402
from pseudocell.human.ingest import read_review  # noqa: E402

pytestmark = pytest.mark.napari


def test_manifest_is_valid_npe2():
    from npe2 import PluginManifest

    import pseudocell.napari

    m = PluginManifest.from_file(Path(pseudocell.napari.__file__).parent / "napari.yaml")
    assert {c.id for c in m.contributions.commands} == {
        "pseudocell.read_review", "pseudocell.write_points", "pseudocell.review_queue"}


def test_widget_walks_the_queue_and_saves(qtbot, tmp_path, small_crops):
    from napari.components import ViewerModel

    from pseudocell.napari._widget import ReviewQueueWidget

    folder = tmp_path / "review"
    make_review(folder, small_crops[0].images[0])
    viewer = ViewerModel()
    w = ReviewQueueWidget(viewer, folder)
    qtbot.addWidget(w)
    assert [lay.name for lay in viewer.layers] == ["img_y0_x0 image", "cells", "non-cells"]
    cells = viewer.layers["cells"]
    cells.add(np.array([[20.0, 55.0]]))                  # a new cell: status "added"
    cells.selected_data = {1}
    viewer.layers["non-cells"].add(cells.data[1:2])      # the second proposal is no cell
    cells.remove_selected()
    w.buttons["Save"].click()
    w.buttons["Next"].click()
    assert viewer.layers[0].name == "img_y64_x64 image" and len(viewer.layers) == 3
    w.buttons["Accept all"].click()
    assert [t.reviewed for t in read_manifest_csv(folder / "manifest.csv")] == [True, True]
    _, _, labels, _ = read_review(folder)
    first = labels["tile_id"].astype(str) == "img_y0_x0"
    assert sorted(labels["kind"][first].tolist()) == ["human_added", "human_confirmed",
                                                      "human_confirmed", "human_rejected"]


def test_writer_saves_layers_opened_by_the_reader(tmp_path, small_crops):
    from pseudocell.napari._reader import get_reader
    from pseudocell.napari._writer import write_points

    folder = tmp_path / "review"
    make_review(folder, small_crops[0].images[0])
    layers = get_reader(str(folder))(str(folder))
    data, attrs, kind = layers[1]
    layers[1] = (data[:2], {**attrs, "features": {"status": ["proposed", "proposed"]}}, kind)
    layers[2] = (data[2:], layers[2][1], "points")
    out = write_points(str(tmp_path / "x.csv"), layers)
    assert out == [str(folder / "points" / "img_y0_x0.csv")]
    _, _, labels, _ = read_review(folder)
    assert sorted(labels["kind"].tolist()) == ["human_confirmed", "human_confirmed",
                                               "human_rejected"]
