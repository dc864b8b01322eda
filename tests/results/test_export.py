"""Export of a round's labels and detections (napari, QuPath GeoJSON, CSV)."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.data.geojson import read_geojson_points
from pseudocell.errors import InvalidInputError


def test_export_round_matches_the_run_tables(tmp_path, small_crops, tiny_cfg):
    from pseudocell.data.points import hide_points
    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.orchestrator.run import prepare_run, run_loop
    from pseudocell.results import RunResults
    from pseudocell.results.export import export_round
    from pseudocell.validation import RunInputs

    images, gt = small_crops
    cfg = tiny_cfg.replace(rounds=1)
    layout = prepare_run(tmp_path / "run", cfg, RunInputs(images, hide_points(gt, 0.3, seed=0)))
    run_loop(layout, cfg, LocalExecutor())
    files = export_round(layout.root, tmp_path / "out", rnd=0, fmt="geojson")
    assert len(files) == 2 * len(images.ids)
    res = RunResults(layout, cfg)
    labels, det = res.labels(0), res.detections(0)
    assert set(labels["kind"]) == {"annotated", "pseudo_pos", "pseudo_neg"}
    for i in images.ids:
        m = labels["image_id"].astype(str) == i
        back = read_geojson_points(tmp_path / "out" / "round_000_labels_geojson" / f"{i}.geojson")
        np.testing.assert_allclose(back["y"], labels["y"][m], atol=1e-6)
        np.testing.assert_allclose(back["x"], labels["x"][m], atol=1e-6)
        assert back["class"].tolist() == labels["kind"][m].tolist()
        m = det["image_id"].astype(str) == i
        back = read_geojson_points(tmp_path / "out" / "round_000_detections_geojson" /
                                   f"{i}.geojson")
        np.testing.assert_allclose(back["y"], det["y"][m], atol=1e-6)
    # napari and csv: one line per point plus the header
    (napari,) = export_round(layout.root, tmp_path / "n", rnd=1, fmt="napari",
                             what=("detections",))
    assert len(napari.read_text().splitlines()) == len(res.detections(1)["y"]) + 1
    (csv,) = export_round(layout.root, tmp_path / "c", fmt="csv", what=("labels",))
    assert csv.read_text().splitlines()[0] == "image,y,x,kind,round,score"
    with pytest.raises(InvalidInputError, match="rounds 0..1"):
        export_round(layout.root, tmp_path / "x", rnd=2)
