"""Point files (plain and napari CSV), ground truth from dot/label images, image reading
and overlays, on small crops of real images from ``../shared/data`` written into
``tmp_path`` at test time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from conftest import BRIGHTFIELD, SHARED, require_data
from pseudocell.data.images import (normalize, points_from_dots, points_from_labels,
                                    read_image, read_raw)
from pseudocell.data.overlay import COLORS, draw_overlay
from pseudocell.data.points import read_points_csv, write_napari_csv, write_points_csv
from pseudocell.validation import ImageSet, check_points, load_image_folder

STARDIST = SHARED / "stardist-dsb2018-2d"
CROP = (slice(100, 196), slice(150, 278))  # 96 x 128 px, holds many dots in 001/003


def _need(path: Path) -> Path:
    return require_data(path)


@pytest.fixture(scope="module")
def bf_dir() -> Path:
    return _need(BRIGHTFIELD / "001cells.png").parent


@pytest.fixture
def bf_crops(tmp_path, bf_dir) -> Path:
    """96x128 crops of 001 and 003 (cells RGB + dots) saved as PNGs in tmp_path/bf."""
    d = tmp_path / "bf"
    d.mkdir()
    for n in (1, 3):
        for kind in ("cells", "dots"):
            with Image.open(bf_dir / f"{n:03d}{kind}.png") as im:
                Image.fromarray(np.asarray(im)[CROP].copy()).save(d / f"{n:03d}{kind}.png")
    return d


@pytest.fixture
def stardist_crop(tmp_path) -> tuple[Path, Path]:
    """A 96x128 crop of the DSB2018 image (uint16) and its label mask, as TIFFs."""
    img = tifffile.imread(_need(STARDIST / "img2d.tif"))[100:196, 100:228]
    lab = tifffile.imread(_need(STARDIST / "mask2d.tif"))[100:196, 100:228]
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "mask.tif", lab)
    return tmp_path / "img.tif", tmp_path / "mask.tif"


def _images(ids: list[str], shape=(96, 128)) -> ImageSet:
    return ImageSet(ids, [np.zeros(shape, np.float32) for _ in ids], [f"{i}.png" for i in ids])


# -- reading point files -----------------------------------------------------------------

def test_read_plain_csv_with_file_names_and_ids(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("image,y,x,comment\n001cells.png,10.5,20.25,first\n 002cells.png ,0,127,\n"
                 "\n001cells,95,0,by id\n")
    layout, refs, yx = read_points_csv(p)
    assert layout == "plain"
    assert refs == ["001cells.png", "002cells.png", "001cells"]
    np.testing.assert_array_equal(yx, [[10.5, 20.25], [0, 127], [95, 0]])
    assert yx.dtype == np.float64
    t = check_points(refs, yx, _images(["001cells", "002cells"]), layout=layout)
    assert t["image_id"].tolist() == ["001cells", "002cells", "001cells"]
    np.testing.assert_array_equal(t["y"], [10.5, 0, 95])
    np.testing.assert_array_equal(t["x"], [20.25, 127, 0])


def test_read_plain_csv_with_image_id_header(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("x,image_id,y\n3,img_b,4\n5.5,img_a,6\n")  # column order does not matter
    layout, refs, yx = read_points_csv(p)
    assert (layout, refs) == ("plain", ["img_b", "img_a"])
    np.testing.assert_array_equal(yx, [[4, 3], [6, 5.5]])


def test_read_napari_two_axis(tmp_path):
    p = tmp_path / "n2.csv"
    p.write_text("index,axis-0,axis-1\n0,12.5,40.0\n1,80,3.25\n")
    layout, refs, yx = read_points_csv(p)
    assert (layout, refs) == ("napari2d", [0, 0])
    np.testing.assert_array_equal(yx, [[12.5, 40.0], [80, 3.25]])
    t = check_points(refs, yx, _images(["only"]), layout=layout)
    assert t["image_id"].tolist() == ["only", "only"]


def test_read_napari_three_axis(tmp_path):
    p = tmp_path / "n3.csv"
    p.write_text("index,axis-0,axis-1,axis-2\n0,1.0,12.5,40\n1,0,80,3.25\n2,1,5,6\n")
    layout, refs, yx = read_points_csv(p)
    assert (layout, refs) == ("napari3d", [1, 0, 1])
    np.testing.assert_array_equal(yx, [[12.5, 40], [80, 3.25], [5, 6]])
    # frame = position of the image in name order
    t = check_points(refs, yx, _images(["a", "b"]), layout=layout)
    assert t["image_id"].tolist() == ["b", "a", "b"]


# -- writing and reading back ------------------------------------------------------------

def _table(rng, ids, n, shape=(96, 128)):
    img = rng.choice(ids, n)
    return {"image_id": np.array(img, object),
            "y": rng.uniform(0, shape[0] - 1, n), "x": rng.uniform(0, shape[1] - 1, n),
            "value": rng.uniform(0, 1, n).astype(np.float32)}


def test_write_points_csv_round_trip(tmp_path):
    ids = ["001cells", "002cells", "003cells"]
    t = _table(np.random.default_rng(0), ids, 40)
    p = tmp_path / "pts.csv"
    write_points_csv(p, t, extra=("value",))
    assert p.read_text().splitlines()[0] == "image,y,x,value"
    layout, refs, yx = read_points_csv(p)
    back = check_points(refs, yx, _images(ids), layout=layout)
    assert back["image_id"].tolist() == t["image_id"].tolist()
    np.testing.assert_allclose(back["y"], t["y"], atol=0.01)
    np.testing.assert_allclose(back["x"], t["x"], atol=0.01)
    # the extra column keeps 6 significant digits
    vals = [float(r.split(",")[3]) for r in p.read_text().splitlines()[1:]]
    np.testing.assert_allclose(vals, t["value"], rtol=1e-5)


def test_write_napari_csv_round_trip(tmp_path):
    ids = ["001cells", "002cells", "003cells"]
    t = _table(np.random.default_rng(1), ids, 40)
    p = tmp_path / "napari.csv"
    write_napari_csv(p, ids, t)
    assert p.read_text().splitlines()[0] == "index,axis-0,axis-1,axis-2"
    layout, refs, yx = read_points_csv(p)
    assert layout == "napari3d"
    assert refs == [ids.index(i) for i in t["image_id"]]
    back = check_points(refs, yx, _images(ids), layout=layout)
    assert back["image_id"].tolist() == t["image_id"].tolist()
    np.testing.assert_allclose(back["y"], t["y"], atol=0.01)
    np.testing.assert_allclose(back["x"], t["x"], atol=0.01)


def test_round_trip_against_real_images(bf_crops, tmp_path):
    """Ground truth of real crops → both CSV layouts → the same checked table."""
    imgs = load_image_folder(bf_crops, pattern="*cells.png")
    assert imgs.ids == ["001cells", "003cells"]
    rows = []
    for n, i in ((1, "001cells"), (3, "003cells")):
        pts = points_from_dots(read_raw(bf_crops / f"{n:03d}dots.png"))
        pts = np.clip(pts + [0.333, 0.667], 0, [95, 127])  # sub-pixel, inside the image
        rows += [(i, y, x) for y, x in pts]
    t = {"image_id": np.array([r[0] for r in rows], object),
         "y": np.array([r[1] for r in rows]), "x": np.array([r[2] for r in rows])}
    write_points_csv(tmp_path / "plain.csv", t)
    write_napari_csv(tmp_path / "napari.csv", imgs.ids, t)
    for f in ("plain.csv", "napari.csv"):
        layout, refs, yx = read_points_csv(tmp_path / f)
        back = check_points(refs, yx, imgs, layout=layout)
        assert back["image_id"].tolist() == t["image_id"].tolist()
        np.testing.assert_allclose(back["y"], t["y"], atol=0.01)
        np.testing.assert_allclose(back["x"], t["x"], atol=0.01)


# -- ground truth from dot and label images ----------------------------------------------

def test_points_from_dots_on_a_real_dots_crop(bf_crops):
    for n in (1, 3):
        dots = read_raw(bf_crops / f"{n:03d}dots.png")
        assert dots.shape == (96, 128) and dots.dtype == np.uint8
        pts = points_from_dots(dots)
        expected = np.stack(np.nonzero(dots > 127), axis=1).astype(np.float64)
        assert len(expected) >= 10
        assert pts.dtype == np.float64 and pts.shape == expected.shape
        np.testing.assert_array_equal(pts, expected)
    assert points_from_dots(np.zeros((8, 8), np.uint8)).shape == (0, 2)


def test_points_from_labels_on_a_real_mask_crop(stardist_crop):
    lab = read_raw(stardist_crop[1])
    assert lab.shape == (96, 128)
    ids = [i for i in np.unique(lab) if i != 0]
    assert len(ids) >= 3
    expected = np.array([ndimage.center_of_mass(lab == i) for i in ids])
    pts = points_from_labels(lab)
    assert pts.dtype == np.float64 and pts.shape == (len(ids), 2)
    np.testing.assert_allclose(pts, expected, atol=1e-9)
    # centroids lie inside the image
    assert (pts >= 0).all() and (pts[:, 0] <= 95).all() and (pts[:, 1] <= 127).all()
    assert points_from_labels(np.zeros((8, 8), np.uint16)).shape == (0, 2)


# -- images -------------------------------------------------------------------------------

def test_read_image_rgb_png_is_2d_float32_normalised(bf_crops):
    rgb = read_raw(bf_crops / "001cells.png")
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    im = read_image(bf_crops / "001cells.png")
    assert im.shape == (96, 128) and im.dtype == np.float32
    lo, hi = np.percentile(im, [1, 99.8])
    assert abs(lo) < 1e-4 and abs(hi - 1) < 1e-4
    lum = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    np.testing.assert_allclose(im, normalize(lum.astype(np.float32)), atol=1e-5)


def test_read_image_uint16_tiff(stardist_crop):
    im = read_image(stardist_crop[0])
    assert im.shape == (96, 128) and im.dtype == np.float32
    lo, hi = np.percentile(im, [1, 99.8])
    assert abs(lo) < 1e-4 and abs(hi - 1) < 1e-4


# -- overlays ------------------------------------------------------------------------------

def _layers(rng, shape, n=6):
    """Points of every kind, away from the legend (two rows on a 256 px wide image: rows
    0..24) and the borders."""
    def pts():
        return np.stack([rng.uniform(40, shape[0] - 10, n), rng.uniform(10, shape[1] - 10, n)], 1)

    return {k: pts() for k in COLORS}


def _has(rgb: np.ndarray, colour) -> bool:
    return bool((rgb == np.array(colour, np.uint8)).all(axis=-1).any())


def test_draw_overlay_writes_png_with_legend(tmp_path, bf_dir):
    with Image.open(bf_dir / "003cells.png") as f:
        raw = np.asarray(f)[100:228, 150:406]  # 128 x 256: wide enough for the legend
    im = normalize(raw[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    out = tmp_path / "overlay.png"
    draw_overlay(out, im, _layers(np.random.default_rng(0), im.shape))
    with Image.open(out) as f:
        assert f.format == "PNG" and f.size == (256, 128) and f.mode == "RGB"
        rgb = np.asarray(f)
    strip = rgb[:37]  # the legend wraps onto three rows of 12 px at this width
    for kind, c in COLORS.items():
        assert _has(strip, c), f"legend colour of {kind} {c} missing"
        assert _has(rgb[37:], c), f"no {kind} drawn in {c}"
    # outside the legend and the marks, the image itself is there (grey levels)
    assert rgb[20:, :, 0].std() > 5


def test_draw_overlay_legend_on_a_small_crop(tmp_path, bf_crops):
    im = read_image(bf_crops / "001cells.png")
    out = tmp_path / "small.png"
    draw_overlay(out, im, {})
    with Image.open(out) as f:
        assert f.size == (128, 96)
        rgb = np.asarray(f)
    # the legend wraps onto more rows (12 px each) instead of running off the image
    # (kinds of some runs only, e.g. a person's review, appear where an image has them)
    occasional = ("uncertain", "human_added", "human_confirmed", "human_rejected")
    missing = [k for k, c in COLORS.items() if k not in occasional and not _has(rgb[:40], c)]
    assert not missing, f"legend entries cut off: {missing}"


def test_draw_overlay_keeps_a_normalised_image_visible(tmp_path, bf_dir):
    """A normalised image (1st..99.8th percentile → 0..1, not clipped) can have a few
    pixels far above 1; the overlay must still show the image, not a black frame."""
    with Image.open(bf_dir / "002cells.png") as f:
        raw = np.asarray(f)[CROP]
    im = normalize(raw[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    assert im.max() > 1.5  # a few bright outliers in this crop
    out = tmp_path / "bright.png"
    draw_overlay(out, im, {})
    with Image.open(out) as f:
        rgb = np.asarray(f)
    expected = (np.clip(im, 0, 1) * 255)[20:].mean()
    got = rgb[20:, :, 0].mean()
    assert abs(got - expected) < 3
