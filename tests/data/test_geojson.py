"""QuPath GeoJSON: valid structure, exact coordinate round trip, export of a run's round."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pseudocell.data.geojson import (PIXEL_CENTRE_OFFSET, points_to_geojson,
                                     read_geojson_points, write_geojson)
from pseudocell.errors import InvalidInputError


def test_points_round_trip_and_follow_geojson(tmp_path):
    y = np.array([0.0, 12.25, 99.5])
    x = np.array([3.0, 0.0, 40.125])
    coll = points_to_geojson(y, x, classes=np.array(["annotated", "pseudo_pos", "pseudo_neg"]),
                             colors={"annotated": (0, 200, 0)},
                             measurements={"peak": np.array([0.9, np.nan, 0.1])},
                             object_type="annotation")
    write_geojson(tmp_path / "a.geojson", coll)
    doc = json.loads((tmp_path / "a.geojson").read_text())  # strict JSON (no NaN)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    f0, f1 = doc["features"][:2]
    assert f0["type"] == "Feature" and f0["geometry"]["type"] == "Point"
    # GeoJSON is [x, y]; QuPath puts pixel corners on integers
    assert f0["geometry"]["coordinates"] == [3.0 + PIXEL_CENTRE_OFFSET, 0.0 + PIXEL_CENTRE_OFFSET]
    assert f0["properties"] == {"objectType": "annotation",
                                "classification": {"name": "annotated", "color": [0, 200, 0]},
                                "measurements": {"peak": 0.9}}
    assert "measurements" not in f1["properties"]  # NaN left out
    back = read_geojson_points(tmp_path / "a.geojson")
    np.testing.assert_array_equal(back["y"], y)
    np.testing.assert_array_equal(back["x"], x)
    assert back["class"].tolist() == ["annotated", "pseudo_pos", "pseudo_neg"]


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(InvalidInputError, match="object_type"):
        points_to_geojson([1.0], [2.0], object_type="cell")
    with pytest.raises(InvalidInputError, match="differ in length"):
        points_to_geojson([1.0, 2.0], [2.0])
    p = tmp_path / "poly.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []}}]}))
    with pytest.raises(InvalidInputError, match="Polygon"):
        read_geojson_points(p)
    (tmp_path / "x.geojson").write_text("{nope")
    with pytest.raises(InvalidInputError, match="x.geojson"):
        read_geojson_points(tmp_path / "x.geojson")


def test_export_round_matches_the_run_tables(tmp_path, small_crops, tiny_cfg):
    from pseudocell.orchestrator.demo import hide_points
    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.orchestrator.export import export_round, round_detections, round_labels
    from pseudocell.orchestrator.run import RunInputs, prepare_run, run_loop

    images, gt = small_crops
    cfg = tiny_cfg.replace(rounds=1)
    layout = prepare_run(tmp_path / "run", cfg, RunInputs(images, hide_points(gt, 0.3, seed=0)))
    run_loop(layout, cfg, LocalExecutor())
    files = export_round(layout.root, tmp_path / "out", rnd=0, fmt="geojson")
    assert len(files) == 2 * len(images.ids)
    labels, det = round_labels(layout, 0), round_detections(layout, 0)
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
    assert len(napari.read_text().splitlines()) == len(round_detections(layout, 1)["y"]) + 1
    (csv,) = export_round(layout.root, tmp_path / "c", fmt="csv", what=("labels",))
    assert csv.read_text().splitlines()[0] == "image,y,x,kind,round,score"
    with pytest.raises(InvalidInputError, match="rounds 0..1"):
        export_round(layout.root, tmp_path / "x", rnd=2)
