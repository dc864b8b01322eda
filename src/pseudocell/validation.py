"""The one place that checks user inputs: images, points, model files, output paths,
ports, devices and run directories.

Every check raises :class:`~pseudocell.errors.InvalidInputError` (or
:class:`~pseudocell.errors.RunDirectoryError`) naming the input, the value and the fix.
Config fields are checked by :class:`~pseudocell.config.Config` itself.
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudocell.config import Config, load_config
from pseudocell.data.images import image_id, list_images, normalize, read_raw, to_gray
from pseudocell.data.points import read_points_csv
from pseudocell.errors import InvalidInputError, RunDirectoryError

__all__ = ["ImageSet", "RunInputs", "check_label_free_inputs", "check_adapt_inputs",
           "check_image", "load_image_folder", "list_image_folder",
           "read_checked_image", "check_points",
           "load_points", "load_run_inputs", "check_run_dir", "check_disjoint_images",
           "check_output_path", "check_output_file", "check_port", "check_device",
           "load_model_file", "check_same_images", "check_data_dir", "parse_rounds"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSet:
    """Validated, normalised images: ``ids[k]`` names ``images[k]`` (H_k, W_k) float32."""

    ids: list[str]
    images: list[np.ndarray]
    paths: list[str]
    #: Colour channels of each file as read (1 grey, 3 RGB), before conversion to grey;
    #: empty when unknown (images not read from files).
    channels: tuple[int, ...] = ()

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        return {i: im.shape for i, im in zip(self.ids, self.images)}


@dataclass(frozen=True)
class RunInputs:
    """Validated inputs of a run.

    ``points`` are the annotated points; ``gt`` (full ground truth of the training
    images) and ``eval_images`` + ``eval_gt`` (held-out images) are optional and are only
    used by evaluation stages, never by the loop. ``source_images`` + ``source_points``
    (every cell of them annotated) are the source domain of the ``adapt`` modes, whose
    ``images`` are the unlabeled target.
    """

    images: ImageSet
    points: dict[str, np.ndarray] | None
    gt: dict[str, np.ndarray] | None = None
    eval_images: ImageSet | None = None
    eval_gt: dict[str, np.ndarray] | None = None
    source_images: ImageSet | None = None
    source_points: dict[str, np.ndarray] | None = None


def check_image(arr: np.ndarray, *, name: str) -> np.ndarray:
    """Check a raw pixel array and return it normalised → (H, W) float32.

    Accepts (H, W) grayscale and (H, W, 3|4) RGB(A). An alpha channel that varies is
    refused (the pixels it hides would be read as they are); a constant one is dropped,
    with a warning unless it is fully opaque.
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
    if a.ndim == 3 and a.shape[-1] == 4:
        lo, hi = a[..., 3].min(), a[..., 3].max()
        if lo != hi:
            raise InvalidInputError(
                f"image {name}: its alpha (transparency) channel varies ({lo}..{hi}); "
                "pseudocell reads gray or RGB pixels only. Export the image without "
                "transparency (flattened onto its background)")
        opaque = np.iinfo(a.dtype).max if a.dtype.kind in "ui" else 1
        if hi != opaque:
            logger.warning("image %s: its alpha channel (constant %s) is ignored; only the "
                           "RGB values are read", name, hi)
    return normalize(to_gray(a))


def list_image_folder(folder: str | Path, *, pattern: str = "*",
                      name: str = "images") -> tuple[list[str], list[str]]:
    """Image files of ``folder`` (glob ``pattern``) without reading them: ``(ids, paths)``
    sorted by file name. Checks that the folder exists, holds images and that no two
    files share an id; the pixels are checked by :func:`read_checked_image`."""
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
    ids = [image_id(p) for p in paths]
    seen: set[str] = set()
    dup = sorted({i for i in ids if i in seen or seen.add(i)})
    if dup:
        raise InvalidInputError(f"{name}: several files share the id(s) {dup} (same name, "
                                "different suffix); keep one file per image")
    return ids, [str(p) for p in paths]


def read_checked_image(path: str | Path, *, name: str = "images") -> tuple[np.ndarray, int]:
    """Read one image file and check it: ``(image (H, W) float32 normalised, channels)``
    where ``channels`` is 1 (grey) or 3 (RGB) as stored. A file that cannot be decoded or
    holds no usable image raises :class:`InvalidInputError` naming the file."""
    try:
        raw = read_raw(path)
    except Exception as e:  # any decoder failure is the file's fault
        raise InvalidInputError(f"{name}: image {str(path)!r} cannot be read ({e}); "
                                "re-export it as PNG or TIFF") from e
    return check_image(raw, name=repr(str(path))), (1 if np.ndim(raw) == 2 else 3)


def load_image_folder(folder: str | Path, *, pattern: str = "*", name: str = "images") -> ImageSet:
    """Read and check every image in ``folder`` (glob ``pattern``), sorted by file name."""
    ids, paths = list_image_folder(folder, pattern=pattern, name=name)
    imgs, channels = [], []
    for p in paths:
        im, ch = read_checked_image(p, name=name)
        imgs.append(im)
        channels.append(ch)
    return ImageSet(ids, imgs, paths, tuple(channels))


def check_points(refs: list[str | int], yx: np.ndarray, images: ImageSet, *, layout: str,
                 name: str = "points", allow_empty: bool = False) -> dict[str, np.ndarray]:
    """Map image references to ids and check every point.

    Returns a table ``{"image_id", "y", "x"}``. Errors: empty (unless ``allow_empty``),
    unknown image, NaN, outside the image, duplicate point.
    """
    if len(yx) == 0:
        if allow_empty:
            return {"image_id": np.array([], object), "y": np.zeros(0), "x": np.zeros(0)}
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
        # pixel k covers [k - 0.5, k + 0.5): a centroid may lie in the last pixel's half
        if not (-0.5 <= y < h - 0.5 and -0.5 <= x < w - 0.5):
            raise InvalidInputError(
                f"{name}: point {n} (y={y:g}, x={x:g}) lies outside image {i!r} of size "
                f"{h}x{w} (valid: -0.5 <= y < {h - 0.5:g}, -0.5 <= x < {w - 0.5:g}). "
                "Coordinates are (row y, column x) in pixels; check the axis order."
            )
    keys = [(i, round(y, 3), round(x, 3)) for i, (y, x) in zip(img_ids, yx)]
    seen: set = set()
    dups = [k for k in keys if k in seen or seen.add(k)]
    if dups:
        raise InvalidInputError(f"{name}: duplicate point(s) {dups[:3]}; each cell is "
                                "annotated once")
    return {"image_id": np.array(img_ids, object), "y": yx[:, 0].copy(), "x": yx[:, 1].copy()}


def load_points(path: str | Path, images: ImageSet, *, name: str = "points",
                allow_empty: bool = False) -> dict[str, np.ndarray]:
    """Read a points CSV and check it against ``images``."""
    layout, refs, yx = read_points_csv(path, allow_empty=allow_empty)
    return check_points(refs, yx, images, layout=layout, name=f"{name} ({str(path)!r})",
                        allow_empty=allow_empty)


def load_run_inputs(images: str | Path, points: str | Path | None, *,
                    gt: str | Path | None = None,
                    eval_images: str | Path | None = None, eval_gt: str | Path | None = None,
                    pattern: str = "*", source_images: str | Path | None = None,
                    source_points: str | Path | None = None) -> RunInputs:
    """Read and check every input of a run, named as on the command line (``--images``,
    ``--points``, ``--gt``, ``--eval-images``, ``--eval-gt``, ``--source-images``,
    ``--source-points``); nothing is written. Whether the run's mode needs ``points``
    (or the source) is checked when the run is prepared."""
    if eval_gt is not None and eval_images is None:
        raise InvalidInputError("--eval-gt needs --eval-images")
    if source_points is not None and source_images is None:
        raise InvalidInputError("--source-points needs --source-images (the fully "
                                "annotated images of the source domain)")
    if source_images is not None and source_points is None:
        raise InvalidInputError("--source-images needs --source-points: a CSV with every "
                                "cell of the source images (image,y,x or napari)")
    imgs = load_image_folder(images, pattern=pattern, name="--images")
    pts = load_points(points, imgs, name="--points") if points is not None else None
    gt_t = load_points(gt, imgs, name="--gt") if gt is not None else None
    ev_imgs = ev_gt = None
    if eval_images is not None:
        ev_imgs = load_image_folder(eval_images, name="--eval-images")
        if eval_gt is not None:
            ev_gt = load_points(eval_gt, ev_imgs, name="--eval-gt")
        else:  # a legitimate use (detections on held-out images), but easy to mistake
            logger.warning("--eval-images without --eval-gt: the %d held-out images are only "
                           "predicted (detections and overlays), not scored; add --eval-gt "
                           "CSV for their precision, recall and F1", len(ev_imgs.ids))
    src = src_pts = None
    if source_images is not None:
        src = load_image_folder(source_images, pattern=pattern, name="--source-images")
        src_pts = load_points(source_points, src, name="--source-points")
    return RunInputs(imgs, pts, gt_t, ev_imgs, ev_gt, src, src_pts)


def check_label_free_inputs(cfg: Config, inputs: RunInputs) -> None:
    """What the label-free mode needs of its training images: none blank (a constant
    image, e.g. all black, has nothing to cluster), each at least ``psm_crop`` px on both
    sides, and together at least 16 tiles of ``psm_crop`` x ``psm_crop`` px to train the
    activation network on (e.g. one 256 x 256 image for the default 64 px tiles)."""
    from pseudocell.core.psm import MIN_TILES, min_training_pixels

    imgs = inputs.images
    blank = [p for p, im in zip(imgs.paths, imgs.images) if float(im.max()) == float(im.min())]
    if blank:
        raise InvalidInputError(
            f"images: {len(blank)} image(s) are blank (every pixel has the same value), e.g. "
            f"{blank[0]!r}; the label-free mode finds cells by their contrast. Remove them "
            "from --images")
    small = [(p, im.shape) for p, im in zip(imgs.paths, imgs.images)
             if min(im.shape) < cfg.psm_crop]
    if small:
        raise InvalidInputError(
            f"images: {small[0][0]!r} is {small[0][1][0]}x{small[0][1][1]} px, smaller than "
            f"psm_crop={cfg.psm_crop} (the activation network's training tiles); use larger "
            "images or set psm_crop (>= 16) below the smallest side")
    have = sum(im.size for im in imgs.images)
    need = min_training_pixels(cfg.psm_crop)
    if have < need:
        raise InvalidInputError(
            f"images: {len(imgs.images)} image(s) with {have} pixels in all are too few to "
            f"train the label-free activation network: it needs {MIN_TILES} tiles of "
            f"{cfg.psm_crop}x{cfg.psm_crop} px ({need} pixels). Add images, or give clicks "
            "with --points and use mode 'partial'")


def check_adapt_inputs(cfg: Config, inputs: RunInputs) -> None:
    """What the ``adapt`` modes need: source images with points, target images that
    are not the source (no image shared, by file or by pixels), and both domains read
    with the same number of colour channels (grey vs RGB: the detector sees one grey
    plane, and a grey-from-RGB target is another instrument, not an adaptation).
    Held-out images must not be training images of either domain. Warns when
    ``rounds`` ends the curriculum before ``adapt_schedule``'s last fraction."""
    src, tgt = inputs.source_images, inputs.images
    if src is None or inputs.source_points is None:
        raise InvalidInputError(f"mode {cfg.mode!r} needs the source domain: give "
                                "--source-images DIR and --source-points CSV (every cell "
                                "of the source images)")
    if not len(inputs.source_points["y"]):
        raise InvalidInputError("--source-points: no points; the source images must have "
                                "every cell annotated")
    check_disjoint_images(src, tgt, "--source-images", "--images (target)",
                          why="the target must be new images")
    if inputs.eval_images is not None:
        check_disjoint_images(tgt, inputs.eval_images, "--images (target)", "--eval-images",
                              why="held-out images are for evaluation only")
        check_disjoint_images(src, inputs.eval_images, "--source-images", "--eval-images",
                              why="held-out images are for evaluation only")
    cs, ct = set(src.channels), set(tgt.channels)
    if cs and ct and (len(cs | ct) > 1):
        def say(c: set[int]) -> str:
            return " and ".join("grey" if k == 1 else "RGB" for k in sorted(c))
        raise InvalidInputError(
            f"--source-images are {say(cs)} and --images (target) are {say(ct)}: both "
            "domains must have the same number of channels. Convert one set (e.g. save "
            "the RGB images as grey) so that the detector sees the same kind of input")
    if 0 < cfg.rounds < len(cfg.adapt_schedule):
        unused = ", ".join(f"{q:g}" for q in cfg.adapt_schedule[cfg.rounds:])
        logger.warning("rounds = %d: the curriculum stops before adapt_schedule's %s; the "
                       "last detector trains on %g of the target's peaks. Give --rounds "
                       "%d or more (the adapt benchmark runs 5 with the default "
                       "schedule: its held-out F1 still rose after the last step)",
                       cfg.rounds, unused, cfg.adapt_schedule[cfg.rounds - 1],
                       len(cfg.adapt_schedule))


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


def check_disjoint_images(a: ImageSet, b: ImageSet, name_a: str, name_b: str, *,
                          why: str = "or the tuned settings are judged on images that "
                                     "chose them") -> None:
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
            f"{' ...' if len(shared) > 5 else ''}); they must be disjoint, {why}")


def check_output_path(value: str | Path | None, *, name: str,
                      example: str | None = None) -> str | None:
    """Refuse an empty or blank path, which would silently mean the current folder;
    returns ``value`` as a string (None stays None). ``example`` shows a good value."""
    if value is None:
        return None
    if not str(value).strip():
        raise InvalidInputError(f"{name} is empty ({str(value)!r}), which would mean the "
                                f"current folder; give a path, e.g. "
                                f"{example or name + ' runs/exp1'}")
    return str(value)


def check_output_file(path: str | Path | None, *, name: str) -> None:
    """An output file can be written: not blank, not a folder, its folder exists."""
    if path is None:
        return
    check_output_path(path, name=name, example=f"{name} metrics.json")
    p = Path(path)
    if p.is_dir():
        raise InvalidInputError(f"{name} {str(p)!r} is a folder; give a file name, e.g. "
                                f"{name} {p / 'metrics.json'}")
    parent = p.parent
    if not parent.is_dir():
        raise InvalidInputError(f"{name} {str(p)!r}: folder {str(parent)!r} does not exist; "
                                "create it first or write the file elsewhere")


def check_port(port: int, *, name: str = "--port") -> int:
    """A TCP port number in 1..65535."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInputError(f"{name} {port!r} is not a TCP port; use a number in "
                                "1..65535, e.g. 5000")
    return port


def check_device(device: str, *, name: str = "--device",
                 fix: str = "use --device cpu or auto") -> str:
    """Check that ``device`` exists on this machine (before anything is written).

    ``auto`` and ``cpu`` always do; ``cuda`` and ``cuda:N`` need CUDA and a GPU N.
    ``fix`` ends the message (how to choose another device where ``device`` came from).
    """
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device in ("auto", "cpu"):
        return device
    if m is None:
        raise InvalidInputError(f"{name} {device!r} is not a device; use auto, cpu, cuda "
                                "or cuda:N (N = GPU index)")
    import torch

    if not torch.cuda.is_available():
        raise InvalidInputError(f"{name} {device!r}: CUDA is not available on this machine "
                                f"(torch {torch.__version__}); {fix}")
    index, count = int(m.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise InvalidInputError(f"{name} {device!r}: this machine has {count} GPU(s) "
                                f"(cuda:0..cuda:{count - 1}); {fix}")
    return device


def load_model_file(path: str | Path, *, name: str = "--model") -> dict:
    """Read and check a detector model file (``RUN/final/model.pt``).

    It must be a torch file that loads with ``weights_only=True``, hold ``state_dict``
    and ``meta`` with the U-Net ``widths``, and its tensors must have the shapes of a
    U-Net of those widths. Returns ``{"state_dict": ..., "meta": ...}``.
    """
    import torch

    from pseudocell.core.unet import UNet

    where = f"{name} {str(path)!r}"
    fix = "pass RUN/final/model.pt of a finished run, or the run directory"
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise InvalidInputError(f"{where} is empty (0 bytes); {fix}")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes: not the user's news
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # every reason torch cannot read it is the file's fault
        # torch's first sentence says what failed (the rest can be a page of advice)
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise InvalidInputError(f"{where} is not a readable model file ({type(e).__name__}"
                                f"{': ' + first if first else ''}); it may be truncated, or "
                                f"not a torch model file saved by pseudocell; {fix}") from e
    if not isinstance(ck, dict) or not {"state_dict", "meta"} <= set(ck):
        keys = sorted(map(str, ck)) if isinstance(ck, dict) else type(ck).__name__
        raise InvalidInputError(f"{where} holds {keys}, not a detector model "
                                f"(state_dict and meta); {fix}")
    widths = ck["meta"].get("widths") if isinstance(ck["meta"], dict) else None
    if not (isinstance(widths, (list, tuple)) and len(widths) >= 2
            and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)):
        raise InvalidInputError(f"{where} has no U-Net widths in its meta (got {widths!r}); "
                                f"it is not a detector model (the PU learner's?); {fix}")
    state = ck["state_dict"]
    try:
        with torch.device("meta"):  # shapes only, nothing allocated
            want = {k: tuple(v.shape) for k, v in UNet(
                in_channels=1, widths=tuple(widths), out_channels=1).state_dict().items()}
    except (RuntimeError, ValueError, OverflowError) as e:
        raise InvalidInputError(f"{where}: U-Net widths {list(widths)} in its meta cannot be "
                                f"built ({e}); the file is damaged; {fix}") from e
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)} \
        if isinstance(state, dict) else {}
    if got != want:
        bad = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
        raise InvalidInputError(f"{where}: its weights do not fit a U-Net of widths "
                                f"{list(widths)} (e.g. {bad[:3]}); the file is damaged or "
                                f"from another program; {fix}")
    return ck


def check_same_images(pred_ids: set[str], gt_ids: set[str], *, pred: str = "--pred",
                      gt: str = "--gt") -> None:
    """Refuse two non-empty point files that name no image in common (their scores
    would be meaningless: every prediction a false positive)."""
    if pred_ids and gt_ids and not pred_ids & gt_ids:
        def show(ids: set[str]) -> str:
            s = sorted(ids)
            return f"{s[:5]}{' ...' if len(s) > 5 else ''}"
        raise InvalidInputError(
            f"{pred} names images {show(pred_ids)} and {gt} names {show(gt_ids)}: no image in "
            "common. A napari file numbers frames (frame0, frame1, ...): pass --images so "
            "frames map to image names, or use the same image names in both files")


def check_data_dir(folder: str | Path, files: list[str], *, name: str = "--data-dir") -> Path:
    """A folder that holds every one of ``files`` (e.g. the demo's NNNcells/NNNdots.png)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"{name} {str(folder)!r} is not a folder; point it at the "
                                "folder with the files, or leave it out")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise InvalidInputError(
            f"{name} {str(folder)!r} lacks {len(missing)} of its {len(files)} files (e.g. "
            f"{missing[:3]}); point it at the folder with them, or leave it out")
    return folder


def parse_rounds(text: str, current: int) -> int:
    """``--rounds`` of ``pseudocell resume``: ``N`` (absolute) or ``+N`` (more than the
    run's ``current``); a run never loses rounds.

    >>> parse_rounds("+1", 2), parse_rounds("4", 2)
    (3, 4)
    """
    t = str(text).strip()
    try:
        n = current + int(t[1:]) if t.startswith("+") else int(t)
    except ValueError:
        raise InvalidInputError(f"--rounds {text!r}: give a number of rounds (e.g. 3) or "
                                "'+1' for one more round") from None
    if n < current:
        raise InvalidInputError(f"--rounds {text!r}: the run already has {current} rounds "
                                "and cannot lose any; give at least that many (or '+1'), "
                                "or start a new run with --out")
    return n

