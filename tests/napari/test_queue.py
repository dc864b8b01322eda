"""The plugin's review queue without Qt: tiles in order, layers, saving answers that
`pseudocell ingest` reads back."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_review

from pseudocell.errors import InvalidInputError
from pseudocell.human.files import read_manifest_csv
from pseudocell.human.ingest import read_review
from pseudocell.napari._reader import get_reader
from pseudocell.napari.queue import ReviewQueue, join_layers


@pytest.fixture
def folder(tmp_path, small_crops):
    f = tmp_path / "review"
    make_review(f, small_crops[0].images[0])
    return f


def test_queue_walks_tiles_and_saves_answers_ingest_understands(folder):
    q = ReviewQueue.open(folder)
    assert len(q) == 2 and q.index == 0
    v = q.current()
    assert v.image.shape == (64, 64) and 0.0 <= v.image.min() <= v.image.max() <= 1.0
    assert v.cells.tolist() == [[10, 10], [30, 20], [50, 40]] and len(v.non_cells) == 0
    # the person: moves the second proposal to non-cells, adds a cell, saves
    cells = np.array([[10.0, 10.0], [50.0, 40.0], [20.0, 55.0]])
    q.save(cells, np.array(["proposed", "proposed", "added"], object),
           np.array([[30.0, 20.0]]))
    assert [t.reviewed for t in read_manifest_csv(folder / "manifest.csv")] == [True, False]
    assert ReviewQueue.open(folder).index == 1          # reopens at the first unreviewed
    assert q.next().tile.tile_id == "img_y64_x64" and q.next().tile.tile_id == "img_y64_x64"
    _, _, labels, ttab = read_review(folder)
    kinds = sorted(zip(labels["kind"], labels["y"], labels["x"]))
    assert kinds == [("human_added", 20.0, 55.0), ("human_confirmed", 10.0, 10.0),
                     ("human_confirmed", 50.0, 40.0), ("human_rejected", 30.0, 20.0)]
    assert ttab["reviewed"].tolist() == [True, False]
    assert ttab["tp"].tolist() == [2, 0] and ttab["fp"].tolist() == [1, 0]
    assert ttab["fn"].tolist() == [1, 0]


def test_accept_all_confirms_every_proposal(folder):
    q = ReviewQueue.open(folder)
    q.go(1)
    q.accept_all()
    _, _, labels, ttab = read_review(folder)
    assert labels["kind"].tolist() == ["human_confirmed"] * 3
    assert ttab["reviewed"].tolist() == [False, True]


def test_join_layers_recognises_points_moved_back_to_cells():
    pts, st = join_layers(np.array([[1.0, 1.0], [4.0, 4.0]]), np.array(["", ""], object),
                          np.zeros((0, 2)), np.array([[1.2, 0.9]]))
    assert st.tolist() == ["proposed", "added"]


def test_reader_claims_review_folders_only(folder, tmp_path):
    read = get_reader(str(folder))
    layers = read(str(folder))
    assert [kind for _, _, kind in layers] == ["image", "points", "points"]
    assert layers[1][1]["features"]["status"] == ["proposed"] * 3
    assert layers[1][1]["metadata"]["tile_id"] == "img_y0_x0"
    assert get_reader(str(tmp_path)) is None
    with pytest.raises(InvalidInputError, match="not a review folder"):
        ReviewQueue.open(tmp_path)
