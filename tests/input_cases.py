"""Bad user inputs shared by the validation tests (library level) and the CLI table
(tests/cli/test_bad_inputs.py): each case builds its files in a fresh folder from small
crops of real bright-field images in ``../shared/data`` (never copied into the repository).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from conftest import BRIGHTFIELD, require_data
from pseudocell.errors import InvalidConfigError, InvalidInputError, PseudocellError

CROP = (slice(100, 196), slice(150, 278))  # 96 x 128 px
H, W = 96, 128



def load_crops() -> dict[str, np.ndarray]:
    """Two 96x128 RGB crops of real bright-field images, by file name."""
    require_data(BRIGHTFIELD / "001cells.png")
    out = {}
    for name in ("001cells.png", "002cells.png"):
        with Image.open(BRIGHTFIELD / name) as im:
            out[name] = np.asarray(im.convert("RGB"))[CROP].copy()
    return out


def make_image_dir(folder: Path, crops: dict[str, np.ndarray]) -> Path:
    """``folder/images`` holding the crops as PNGs."""
    d = folder / "images"
    d.mkdir()
    for name, rgb in crops.items():
        Image.fromarray(rgb).save(d / name)
    return d


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD_POINTS = "image,y,x\n001cells.png,10.5,20\n001cells,50,60.25\n002cells.png,30,40\n"


# -- the cases ---------------------------------------------------------------------------

@dataclass
class Case:
    """``build(tmp, image_dir)`` returns (images folder, points CSV, extra CLI args).

    ``names``: substrings naming the input (option, file, value); ``fix``: substring
    of the remedy the message gives.
    """

    build: Callable[[Path, Path], tuple[Path, Path, list[str]]]
    error: type[PseudocellError]
    names: list[str] = field(default_factory=list)
    fix: str | None = None


def _folder_with(tmp: Path, name: str, writer) -> Path:
    d = tmp / name
    d.mkdir()
    writer(d)
    return d


def _missing_folder(tmp, img):
    return tmp / "no_such_folder", write_text(tmp / "p.csv", GOOD_POINTS), []


def _no_images(tmp, img):
    d = _folder_with(tmp, "no_images", lambda d: (d / "notes.txt").write_text("hello"))
    return d, write_text(tmp / "p.csv", GOOD_POINTS), []


def _garbage_png(tmp, img):
    (img / "003cells.png").write_bytes(b"this is not a PNG at all" * 20)
    return img, write_text(tmp / "p.csv", GOOD_POINTS), []


def _tiff(arr: np.ndarray, name: str = "stack.tif"):
    def build(tmp, img):
        d = _folder_with(tmp, "tiffs",
                         lambda d: tifffile.imwrite(d / name, arr, photometric="minisblack"))
        return d, write_text(tmp / "p.csv", "image,y,x\nstack.tif,5,5\n"), []
    return build


_nan = np.ones((32, 32), np.float32)
_nan[3, 4] = np.nan
_inf = np.ones((32, 32), np.float32)
_inf[7, 7] = np.inf


def _points(text: str):
    def build(tmp, img):
        return img, write_text(tmp / "pts.csv", text), []
    return build


def _rgba(tmp, img):
    rgba = np.dstack([np.full((40, 40, 3), 120, np.uint8),
                      np.tile(np.arange(40, dtype=np.uint8) * 6, (40, 1))])
    d = _folder_with(tmp, "rgba", lambda d: Image.fromarray(rgba, "RGBA").save(d / "a.png"))
    return d, write_text(tmp / "p.csv", "image,y,x\na.png,5,5\n"), []


def _same_id(tmp, img):
    tifffile.imwrite(img / "001cells.tif", np.zeros((32, 32), np.uint8))
    return img, write_text(tmp / "p.csv", GOOD_POINTS), []


def _points_path(make):
    """The points 'file' is whatever ``make(tmp)`` returns."""
    def build(tmp, img):
        return img, make(tmp), []
    return build


def _points_dir(tmp):
    (tmp / "pts_dir").mkdir()
    return tmp / "pts_dir"


def _latin1(tmp):
    (tmp / "latin1.csv").write_bytes("image,y,x\ncaf\xe9.png,1,2\n".encode("latin-1"))
    return tmp / "latin1.csv"


def _config_path(make):
    def build(tmp, img):
        return img, write_text(tmp / "p.csv", GOOD_POINTS), ["--config", str(make(tmp))]
    return build


def _empty_points(tmp, img):
    p = tmp / "empty.csv"
    p.write_bytes(b"")
    return img, p, []


def _config_file(text: str):
    def build(tmp, img):
        config = write_text(tmp / "c.toml", text)
        return img, write_text(tmp / "p.csv", GOOD_POINTS), ["--config", str(config)]
    return build


def _override(*args: str):
    def build(tmp, img):
        return img, write_text(tmp / "p.csv", GOOD_POINTS), list(args)
    return build


CASES = {
    # images
    "missing image folder": Case(_missing_folder, InvalidInputError,
                                 ["--images", "no_such_folder", "does not exist"]),
    "folder without images": Case(_no_images, InvalidInputError,
                                  ["--images", "no_images", "no image"],
                                  "Point it at the folder with the images"),
    "unreadable png": Case(_garbage_png, InvalidInputError,
                           ["--images", "003cells.png", "cannot be read"], "re-export it"),
    "4-D tiff": Case(_tiff(np.zeros((2, 3, 32, 32), np.uint16)), InvalidInputError,
                     ["stack.tif", "(2, 3, 32, 32)"], "Export one 2-D plane per file"),
    "5-channel tiff": Case(_tiff(np.zeros((32, 32, 5), np.uint8)), InvalidInputError,
                           ["stack.tif", "(32, 32, 5)"], "Export one 2-D plane per file"),
    "NaN pixels": Case(_tiff(_nan), InvalidInputError, ["stack.tif", "NaN"], "replace them"),
    "inf pixels": Case(_tiff(_inf), InvalidInputError, ["stack.tif", "infinite"],
                       "replace them"),
    "image smaller than 8x8": Case(_tiff(np.zeros((4, 32), np.uint8)), InvalidInputError,
                                   ["stack.tif", "too small"], ">= 8x8"),
    "complex pixels": Case(_tiff(np.zeros((16, 16), np.complex64)), InvalidInputError,
                           ["stack.tif", "complex64", "not numeric"]),
    "RGBA with varying alpha": Case(_rgba, InvalidInputError,
                                    ["a.png", "alpha", "varies", "0..234"],
                                    "without transparency"),
    "two files with one id": Case(_same_id, InvalidInputError,
                                  ["--images", "['001cells']", "share the id"],
                                  "keep one file per image"),
    # points
    "point outside the image": Case(
        _points("image,y,x\n001cells.png,10,20\n001cells.png,120,20\n"), InvalidInputError,
        ["--points", "pts.csv", "point 1", "y=120", "001cells", f"{H}x{W}"],
        "check the axis order"),
    "point with negative x": Case(
        _points("image,y,x\n002cells,10,-3\n"), InvalidInputError,
        ["--points", "x=-3", "002cells"], "check the axis order"),
    "unknown image": Case(
        _points("image,y,x\n001cells.png,10,20\n999cells.png,10,20\n"), InvalidInputError,
        ["--points", "pts.csv", "999cells"], "Use the image file name"),
    "empty points file": Case(_empty_points, InvalidInputError,
                              ["empty.csv", "is empty"], "needs a header"),
    "header-only points file": Case(_points("image,y,x\n"), InvalidInputError,
                                    ["pts.csv", "no points"], "annotate at least one cell"),
    "duplicate points": Case(
        _points("image,y,x\n001cells.png,10,20\n002cells.png,10,20\n001cells,10.0,20.0\n"),
        InvalidInputError, ["--points", "duplicate", "001cells"], "annotated once"),
    "napari 2-axis with several images": Case(
        _points("index,axis-0,axis-1\n0,10,20\n1,30,40\n"), InvalidInputError,
        ["--points", "2-axis napari", "2 images"], "use an 'image,y,x' CSV"),
    "napari frame out of range": Case(
        _points("index,axis-0,axis-1,axis-2\n0,0,10,20\n1,5,10,20\n"), InvalidInputError,
        ["--points", "frame(s) [5]", "2 images"], "frames 0..1"),
    "non-numeric coordinate": Case(
        _points("image,y,x\n001cells.png,10,20\n001cells.png,abc,20\n"), InvalidInputError,
        ["pts.csv", "line 3", "'abc'"], "Fix or delete that row"),
    "unknown header": Case(_points("name,row,col\na,1,2\n"), InvalidInputError,
                           ["pts.csv", "header"], "expected 'image,y,x'"),
    "semicolon-separated CSV": Case(_points("image;y;x\n001cells.png;1;2\n"),
                                    InvalidInputError, ["pts.csv", "image;y;x"],
                                    "expected 'image,y,x'"),
    "header without x": Case(_points("image,y,z\n001cells.png,1,2\n"), InvalidInputError,
                             ["pts.csv", "'z'"], "expected 'image,y,x'"),
    "napari 4 axes (issue: (35, 200) trained as (0, 35))": Case(
        _points("index,axis-0,axis-1,axis-2,axis-3\n0,0,0,35,200\n"), InvalidInputError,
        ["pts.csv", "4 axes", "axis-3"], "Save the points of 2-D images"),
    "napari 5 axes": Case(
        _points("index,axis-0,axis-1,axis-2,axis-3,axis-4\n0,0,0,0,35,20\n"),
        InvalidInputError, ["pts.csv", "5 axes"], "3 axes (frame, y, x)"),
    "napari 1 axis": Case(_points("index,axis-0\n0,5\n"), InvalidInputError,
                          ["pts.csv", "1 axis (axis-0)"], "2 axes (y, x)"),
    "napari axes 0 and 2 without 1": Case(_points("index,axis-0,axis-2\n0,5,6\n"),
                                          InvalidInputError, ["pts.csv", "axis-0, axis-2"],
                                          "2 axes (y, x)"),
    "row with an extra field": Case(
        _points("image,y,x\n001cells.png,10,20\n001cells.png,30,40,7\n"), InvalidInputError,
        ["pts.csv", "line 3", "4 fields", "header has 3"], "fix that row"),
    "row with a trailing comma": Case(
        _points("image,y,x\n001cells.png,10,20,\n"), InvalidInputError,
        ["pts.csv", "line 2", "4 fields"], "fix that row"),
    "row with a missing field": Case(
        _points("image,y,x\n001cells.png,10\n"), InvalidInputError,
        ["pts.csv", "line 2", "2 fields"], "fix that row"),
    "napari row with an extra field": Case(
        _points("index,axis-0,axis-1,axis-2\n0,0,10,20\n1,1,10,20,5\n"), InvalidInputError,
        ["pts.csv", "line 3", "5 fields"], "fix that row"),
    "infinite coordinate": Case(_points("image,y,x\n001cells.png,inf,20\n"),
                                InvalidInputError, ["--points", "point 0", "infinite"],
                                "fix or delete that row"),
    "fractional napari frame": Case(
        _points("index,axis-0,axis-1,axis-2\n0,0.5,10,20\n"), InvalidInputError,
        ["pts.csv", "line 2", "axis-0=0.5", "not a whole number"], "frames count the images"),
    "negative napari frame": Case(
        _points("index,axis-0,axis-1,axis-2\n0,-1,10,20\n"), InvalidInputError,
        ["--points", "frame(s) [-1]"], "frames 0..1"),
    "point on the far edge + 1": Case(
        _points(f"image,y,x\n001cells.png,{H},5\n"), InvalidInputError,
        ["--points", f"y={H}", f"{H}x{W}"], "check the axis order"),
    "unknown image_id": Case(_points("image_id,y,x\n003cells,1,2\n"), InvalidInputError,
                             ["--points", "003cells"], "Use the image file name"),
    "missing points file": Case(_points_path(lambda tmp: tmp / "nope.csv"), InvalidInputError,
                                ["nope.csv", "does not exist"], "check the path"),
    "points path is a folder": Case(_points_path(_points_dir), InvalidInputError,
                                    ["pts_dir", "cannot be read"], "UTF-8 CSV"),
    "points file not UTF-8": Case(_points_path(_latin1), InvalidInputError,
                                  ["latin1.csv", "cannot be read"], "UTF-8 CSV"),
    # config
    "alpha > 1 in TOML": Case(_config_file("alpha = 1.5\n"), InvalidConfigError,
                              ["'alpha'", "1.5"], "Fix these fields"),
    "unknown TOML key": Case(_config_file("alpha = 0.1\nalpah = 0.2\n"), InvalidConfigError,
                             ["alpah"], "valid keys are"),
    "invalid TOML": Case(_config_file("alpha = \n"), InvalidConfigError,
                         ["c.toml", "not valid TOML"]),
    "top-level keys and a [pseudocell] table (issue: dropped)": Case(
        _config_file("rounds = 1\n[pseudocell]\nalpha = 0.1\n"), InvalidConfigError,
        ["c.toml", "['rounds']", "outside its [pseudocell] table"],
        "move them under [pseudocell]"),
    "several keys outside [pseudocell]": Case(
        _config_file("seed = 3\nbeta = 0.1\n[pseudocell]\nalpha = 0.1\n"),
        InvalidConfigError, ["['beta', 'seed']"], "drop the [pseudocell] line"),
    "negative seed in TOML": Case(_config_file("seed = -1\n"), InvalidConfigError,
                                  ["'seed'", "[0, 4294967295]", "-1"], "Fix these fields"),
    "seed 2**32 in TOML": Case(_config_file("seed = 4294967296\n"), InvalidConfigError,
                               ["'seed'", "4294967296"], "Fix these fields"),
    "seed as a string": Case(_config_file('seed = "1"\n'), InvalidConfigError,
                             ["'seed'", "'1'", "int"], "Fix these fields"),
    "infinite sigma": Case(_config_file("sigma = inf\n"), InvalidConfigError,
                           ["'sigma'", "finite", "inf"], "Fix these fields"),
    "NaN learning rate": Case(_config_file("detector_lr = nan\n"), InvalidConfigError,
                              ["'detector_lr'", "finite"], "Fix these fields"),
    "device tpu": Case(_config_file('device = "tpu"\n'), InvalidConfigError,
                       ["'device'", "'tpu'", "cuda:N"], "Fix these fields"),
    "device cuda:x": Case(_config_file('device = "cuda:x"\n'), InvalidConfigError,
                          ["'device'", "'cuda:x'"], "Fix these fields"),
    "precision float16": Case(_config_file('precision = "float16"\n'), InvalidConfigError,
                              ["'precision'", "'float16'", "'bfloat16'"], "Fix these fields"),
    "one U-Net level": Case(_config_file("unet_widths = [8]\n"), InvalidConfigError,
                            ["'unet_widths'", "at least two"], "Fix these fields"),
    "crop not a multiple of 2**(levels-1)": Case(
        _config_file("detector_crop = 100\n"), InvalidConfigError,
        ["'detector_crop'", "multiple of 8", "100"], "Fix these fields"),
    "even patch size": Case(_config_file("patch_size = 28\n"), InvalidConfigError,
                            ["'patch_size'", "odd", "28"], "Fix these fields"),
    "cell diameter as a word in TOML": Case(
        _config_file('cell_diameter = "big"\n'), InvalidConfigError,
        ["'cell_diameter'", "'big'", "'auto'"], "Fix these fields"),
    "cell diameter of 1 px": Case(_config_file("cell_diameter = 1\n"), InvalidConfigError,
                                  ["'cell_diameter'", ">= 2"], "Fix these fields"),
    "--cell-diameter not a number": Case(
        _override("--cell-diameter", "40px"), InvalidConfigError,
        ["--cell-diameter", "'40px'"], "--cell-diameter 40"),
    "peak_recall 0": Case(_config_file("peak_recall = 0\n"), InvalidConfigError,
                          ["'peak_recall'", "(0, 1]"], "Fix these fields"),
    "alpha + beta = 1": Case(_config_file("alpha = 0.5\nbeta = 0.5\n"), InvalidConfigError,
                             ["'alpha' + 'beta'", "< 1"], "Fix these fields"),
    "negative rounds": Case(_config_file("rounds = -1\n"), InvalidConfigError,
                            ["'rounds'", "-1"], "Fix these fields"),
    "fractional rounds": Case(_config_file("rounds = 1.5\n"), InvalidConfigError,
                              ["'rounds'", "1.5"], "Fix these fields"),
    "prior of 1": Case(_config_file("pu_prior = 1.0\n"), InvalidConfigError,
                       ["'pu_prior'", "(0, 1)"], "Fix these fields"),
    "unknown peak mode": Case(_config_file('peak_mode = "max"\n'), InvalidConfigError,
                              ["'peak_mode'", "'max'"], "Fix these fields"),
    "unknown key in the [pseudocell] table": Case(
        _config_file("[pseudocell]\nsigmaa = 5.0\n"), InvalidConfigError, ["'sigmaa'"],
        "valid keys are"),
    "config path is a folder": Case(_config_path(lambda tmp: tmp), InvalidConfigError,
                                    ["cannot be read"], "UTF-8 TOML"),
    "config file not UTF-8": Case(
        _config_path(lambda tmp: (tmp / "l1.toml").write_bytes(b'mode = "caf\xe9"\n')
                     and tmp / "l1.toml"), InvalidConfigError, ["l1.toml", "cannot be read"],
        "UTF-8 TOML"),
    "missing config file": Case(_override("--config", "/no/such/config.toml"),
                                InvalidConfigError, ["/no/such/config.toml", "does not exist"]),
    "--alpha 0 on the command line": Case(_override("--alpha", "0"), InvalidConfigError,
                                          ["'alpha'", "(0, 1)"], "on the command line"),
    "--p -1 on the command line": Case(_override("--p", "-1"), InvalidConfigError,
                                       ["'p'", "-1"], "on the command line"),
}
