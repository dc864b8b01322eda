"""QuPath GeoJSON: valid structure, exact coordinate round trip."""
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
