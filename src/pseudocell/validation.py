"""The one place that checks user inputs: images, points and run directories.

Every check raises :class:`~pseudocell.errors.InvalidInputError` (or
:class:`~pseudocell.errors.RunDirectoryError`) naming the input, the value and the fix.
Config fields are checked by :class:`~pseudocell.config.Config` itself.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudocell.config import Config, load_config
from pseudocell.data.images import image_id, list_images, normalize, read_raw, to_gray
from pseudocell.data.points import read_points_csv
from pseudocell.errors import InvalidInputError, RunDirectoryError

__all__ = ["ImageSet", "RunInputs", "check_image", "load_image_folder", "check_points",
           "load_points", "load_run_inputs", "check_run_dir", "check_disjoint_images"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSet:
    """Validated, normalised images: ``ids[k]`` names ``images[k]`` (H_k, W_k) float32."""

    ids: list[str]
    images: list[np.ndarray]
    paths: list[str]

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        return {i: im.shape for i, im in zip(self.ids, self.images)}


@dataclass(frozen=True)
class RunInputs:
    """Validated inputs of a run.

    ``points`` are the annotated points; ``gt`` (full ground truth of the training
    images) and ``eval_images`` + ``eval_gt`` (held-out images) are optional and are only
    used by evaluation stages, never by the loop.
    """

    images: ImageSet
    points: dict[str, np.ndarray]
    gt: dict[str, np.ndarray] | None = None
    eval_images: ImageSet | None = None
    eval_gt: dict[str, np.ndarray] | None = None


def check_image(arr: np.ndarray, *, name: str) -> np.ndarray:
    """Check a raw pixel array and return it normalised → (H, W) float32.

    Accepts (H, W) grayscale and (H, W, 3|4) RGB(A).
    """
    a = np.asarray(arr)
    if a.dtype.kind not in "uifb":
        raise InvalidInputError(f"image {name}: pixel type {a.dtype} is not numeric")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise InvalidInputError(
            f"image {name}: expected a 2-D grayscale (H, W) or RGB (H, W, 3) image, got shape "
            f"{a.shape}. Export one 2-D plane per file (squeeze z/time/channel axes)."
        )
    if a.shape[0] < 8 or a.shape[1] < 8:
        raise InvalidInputError(f"image {name}: {a.shape[:2]} is too small (need >= 8x8)")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        n = int((~np.isfinite(a)).sum())
        raise InvalidInputError(f"image {name}: {n} pixels are NaN or infinite; replace them "
                                "(e.g. with the background value) before running")
    return normalize(to_gray(a))


def load_image_folder(folder: str | Path, *, pattern: str = "*", name: str = "images") -> ImageSet:
    """Read and check every image in ``folder`` (glob ``pattern``), sorted by file name."""
    from pseudocell.storage import fs

    folder = str(folder) if "://" in str(folder) else Path(folder)
    if not (folder.is_dir() if isinstance(folder, Path) else fs.exists(folder)):
        raise InvalidInputError(f"{name}: folder {str(folder)!r} does not exist; check the path "
                                "and point it at the folder that holds the images")
    paths = list_images(folder, pattern)
    if not paths:
        raise InvalidInputError(
            f"{name}: folder {str(folder)!r} holds no image matching {pattern!r} "
            "(.png, .tif, .tiff, .jpg). Point it at the folder with the images."
        )
    ids, imgs = [], []
    for p in paths:
        try:
            raw = read_raw(p)
        except Exception as e:  # any decoder failure is the file's fault
            raise InvalidInputError(f"{name}: image {str(p)!r} cannot be read ({e}); "
                                    "re-export it as PNG or TIFF") from e
        imgs.append(check_image(raw, name=repr(str(p))))
        ids.append(image_id(p))
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InvalidInputError(f"{name}: several files share the id(s) {dup} (same name, "
                                "different suffix); keep one file per image")
    return ImageSet(ids, imgs, [str(p) for p in paths])


def check_points(refs: list[str | int], yx: np.ndarray, images: ImageSet, *, layout: str,
                 name: str = "points") -> dict[str, np.ndarray]:
    """Map image references to ids and check every point.

    Returns a table ``{"image_id", "y", "x"}``. Errors: empty, unknown image, NaN,
    outside the image, duplicate point.
    """
    if len(yx) == 0:
        raise InvalidInputError(f"{name}: no points; annotate at least one cell")
    ids = images.ids
    if layout == "napari2d":
        if len(ids) != 1:
            raise InvalidInputError(
                f"{name}: a 2-axis napari CSV (index,axis-0,axis-1) names no image, but "
                f"{len(ids)} images were given. Save the points of a stack (frame axis) or "
                "use an 'image,y,x' CSV."
            )
        img_ids = [ids[0]] * len(yx)
    elif layout == "napari3d":
        bad = sorted({r for r in refs if not 0 <= int(r) < len(ids)})
        if bad:
            raise InvalidInputError(f"{name}: frame(s) {bad[:5]} out of range; there are "
                                    f"{len(ids)} images (frames 0..{len(ids) - 1})")
        img_ids = [ids[int(r)] for r in refs]
    else:
        known = set(ids)
        img_ids = [r if r in known else image_id(r) for r in map(str, refs)]
        unknown = sorted({r for r in img_ids if r not in known})
        if unknown:
            raise InvalidInputError(
                f"{name}: image(s) {unknown[:5]} are not among the {len(ids)} images "
                f"(e.g. {ids[:3]}). Use the image file name or its name without suffix."
            )
    yx = np.asarray(yx, np.float64)
    if not np.isfinite(yx).all():
        n = int(np.flatnonzero(~np.isfinite(yx).all(axis=1))[0])
        raise InvalidInputError(f"{name}: point {n} (y={yx[n, 0]}, x={yx[n, 1]}) is NaN or "
                                "infinite; fix or delete that row")
    shapes = images.shapes
    for n, (i, (y, x)) in enumerate(zip(img_ids, yx)):
        h, w = shapes[i]
        if not (0 <= y <= h - 1 and 0 <= x <= w - 1):
            raise InvalidInputError(
                f"{name}: point {n} (y={y:g}, x={x:g}) lies outside image {i!r} of size "
                f"{h}x{w}. Coordinates are (row y, column x) in pixels; check the axis order."
            )
    keys = [(i, round(y, 3), round(x, 3)) for i, (y, x) in zip(img_ids, yx)]
    seen: set = set()
    dups = [k for k in keys if k in seen or seen.add(k)]
    if dups:
        raise InvalidInputError(f"{name}: duplicate point(s) {dups[:3]}; each cell is "
                                "annotated once")
    return {"image_id": np.array(img_ids, object), "y": yx[:, 0].copy(), "x": yx[:, 1].copy()}


def load_points(path: str | Path, images: ImageSet, *, name: str = "points") -> dict[str, np.ndarray]:
    """Read a points CSV and check it against ``images``."""
    layout, refs, yx = read_points_csv(path)
    return check_points(refs, yx, images, layout=layout, name=f"{name} ({str(path)!r})")


def load_run_inputs(images: str | Path, points: str | Path, *, gt: str | Path | None = None,
                    eval_images: str | Path | None = None, eval_gt: str | Path | None = None,
                    pattern: str = "*") -> RunInputs:
    """Read and check every input of a run, named as on the command line (``--images``,
    ``--points``, ``--gt``, ``--eval-images``, ``--eval-gt``); nothing is written."""
    if eval_gt is not None and eval_images is None:
        raise InvalidInputError("--eval-gt needs --eval-images")
    imgs = load_image_folder(images, pattern=pattern, name="--images")
    pts = load_points(points, imgs, name="--points")
    gt_t = load_points(gt, imgs, name="--gt") if gt is not None else None
    ev_imgs = ev_gt = None
    if eval_images is not None:
        ev_imgs = load_image_folder(eval_images, name="--eval-images")
        if eval_gt is not None:
            ev_gt = load_points(eval_gt, ev_imgs, name="--eval-gt")
    return RunInputs(imgs, pts, gt_t, ev_imgs, ev_gt)


def check_run_dir(run_dir: str | Path, cfg: Config, *, force: bool) -> str:
    """Decide what to do with ``run_dir``.

    Returns ``"new"`` (absent or empty), ``"continue"`` (a run with the same config) or
    ``"overwrite"`` (different config and ``force``). Raises RunDirectoryError when the
    directory holds a run with a different config (or something else) and not ``force``.
    """
    from pseudocell.storage import fs
    from pseudocell.storage.layout import join

    p = fs.resolve_root(run_dir)
    files = fs.list_files(p)
    if not files:
        return "new"
    if files == [""]:
        raise RunDirectoryError(f"run directory {str(p)!r} is a file; choose another --out")
    cfg_file = join(p, "config.toml")
    if not fs.exists(cfg_file):
        if force:
            return "overwrite"
        raise RunDirectoryError(f"run directory {str(p)!r} exists and is not a pseudocell run "
                                "(no config.toml); choose another --out or pass --force")
    old = load_config(cfg_file)
    if old.config_hash == cfg.config_hash:
        return "continue"
    if force:
        return "overwrite"
    diff = sorted(k for k, v in cfg.to_dict().items() if old.to_dict().get(k) != v)
    raise RunDirectoryError(
        f"run directory {str(p)!r} holds a run with a different config (differs in {diff}). "
        f"Use `pseudocell resume {p}` to finish it, choose another --out, or pass --force "
        "to delete it and start again."
    )


def check_disjoint_images(a: ImageSet, b: ImageSet, name_a: str, name_b: str) -> None:
    """Refuse two image sets that share an image: the same file, or the same pixels
    under another name (e.g. validation and test images of a sweep)."""
    import hashlib

    def keys(s: ImageSet) -> dict[str, str]:
        out = {}
        for i, p, im in zip(s.ids, s.paths, s.images):
            digest = hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest()
            out[f"pixels:{im.shape}:{digest}"] = i
            out[f"file:{Path(p).resolve()}"] = i
        return out

    ka, kb = keys(a), keys(b)
    shared = sorted({(ka[k], kb[k]) for k in ka.keys() & kb.keys()})
    if shared:
        pairs = ", ".join(f"{x} = {y}" for x, y in shared[:5])
        raise InvalidInputError(
            f"{name_a} and {name_b} share {len(shared)} image(s) ({pairs}"
            f"{' ...' if len(shared) > 5 else ''}); they must be disjoint, or the tuned "
            "settings are judged on images that chose them")
