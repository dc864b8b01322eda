"""Use a trained model on new images, and score point files against each other."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from pseudocell.actors.detect_data import DetectSettings, ImageDetector
from pseudocell.config import PRECISIONS, Config, load_config
from pseudocell.core.metrics import match_points, pooled
from pseudocell.core.scale import scale_factor
from pseudocell.data.images import image_id
from pseudocell.data.points import (points_by_image, read_points_csv, write_napari_csv,
                                    write_points_csv)
from pseudocell.errors import InvalidInputError
from pseudocell.storage.tables import read_table, write_table
from pseudocell.validation import (check_device, check_output_path, check_points,
                                   check_same_images, list_image_folder, load_image_folder,
                                   load_model_file)

__all__ = ["detect_folder", "choose_engine", "merge_shards", "evaluate_files",
           "resolve_model", "ENGINES", "RAY_MIN_IMAGES", "SHARD_IMAGES"]

logger = logging.getLogger(__name__)

#: The fixed peak threshold of models made before thresholds were calibrated.
LEGACY_PEAK_THRESHOLD = 0.3

#: ``detect --engine`` values.
ENGINES = ("auto", "local", "ray")
#: ``--engine auto`` streams through Ray Data from this many images on. Measured with
#: benchmarks/detect_scale.py on 2 (shared) cores, 512×512 images: Ray tied the local
#: engine at 20 images (74 s against 72 s: Ray's start-up eats its gain) and was 2.1×
#: faster at 100 (one torch thread per actor beats two threads in one process); 50 keeps
#: small sets off Ray's start-up and its ~1.3 GB of extra memory.
RAY_MIN_IMAGES = 50
#: Images per Parquet shard under ``out/shards/``.
SHARD_IMAGES = 256


def resolve_model(model: str | Path) -> tuple[Path, Config, dict]:
    """``model.pt`` path, the run config and the checked model (``{"state_dict", "meta"}``),
    from a run directory or a model file inside one."""
    check_output_path(model, name="--model", example="--model runs/exp1")
    model = Path(model)
    if model.is_dir():
        model = model / "final" / "model.pt"
    if not model.is_file():
        raise InvalidInputError(f"--model: {str(model)!r} does not exist; pass RUN/final/model.pt "
                                "or a finished run directory")
    ck = load_model_file(model, name="--model")
    for parent in model.parents:
        if (parent / "config.toml").exists():
            return model, load_config(parent / "config.toml"), ck
    logger.warning("no config.toml above %s; using default detection settings", model)
    return model, Config(), ck


def detect_folder(model: str | Path, images: str | Path, out: str | Path, *, pattern: str = "*",
                  threshold: float | None = None, overlays: bool = True,
                  device: str | None = None, precision: str | None = None,
                  cell_diameter: float | None = None, engine: str = "auto", batch_size: int = 8, concurrency: int | None = None,
                  ray_address: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Detect cells in every image of a folder; returns the number of detections.

    Images are resized as in the model's run (its cell size, or ``cell_diameter`` px when
    the new images' cells differ) and cut at the peak threshold of the model's round
    (or ``threshold``). The folder is listed, not loaded: images are read one at a time
    (a file that cannot be read stops the run with an error naming it) and detections
    stream into Parquet shards ``out/shards/part-<first image>.parquet`` (columns
    ``index`` = image position, ``image_id``, ``y``, ``x``, ``value``), which are then
    merged, shard by shard, into ``out/detections.csv`` (napari, frame = image order)
    and ``out/detections_table.csv`` (image,y,x,value), in image order. Overlays go to
    ``out/overlays/<image>.png`` when ``overlays``. Model, device, options and ``out``
    are checked before anything is written. ``device`` and ``precision`` replace the
    run's ``device`` and ``precision``.

    ``engine``: ``local`` runs in this process; ``ray`` streams the paths through Ray
    Data (``map_batches`` of :class:`~pseudocell.actors.detect_data.ImageDetector`
    actors, ``concurrency`` of them, default one per CPU or per GPU of the cluster,
    ``batch_size`` images per call); ``auto`` picks ``ray`` from :data:`RAY_MIN_IMAGES`
    images on. Both give identical files. ``ray_address`` attaches to a running cluster
    (default: a local one, shut down at the end). ``progress(done, total)`` is called
    as images finish.
    """
    check_output_path(out, name="--out", example="--out detections/")
    if cell_diameter is not None and not (math.isfinite(cell_diameter) and cell_diameter >= 2):
        raise InvalidInputError(f"--cell-diameter must be a diameter in pixels >= 2, got "
                                f"{cell_diameter!r}; leave it out to resize as the model's "
                                "run did")
    if engine not in ENGINES:
        raise InvalidInputError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}; "
                                "use auto to pick by the number of images")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InvalidInputError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    if concurrency is not None and not (isinstance(concurrency, int) and concurrency >= 1):
        raise InvalidInputError(f"--concurrency must be an integer >= 1, got {concurrency!r}; "
                                "leave it out for one worker per CPU (or GPU)")
    path, cfg, ck = resolve_model(model)
    meta = ck["meta"]
    threshold = threshold if threshold is not None else (
        cfg.peak_threshold if cfg.peak_threshold is not None else meta.get("peak_threshold"))
    if threshold is None:
        threshold = LEGACY_PEAK_THRESHOLD
        logger.warning("the model carries no peak threshold; using %.2f (pass --threshold)",
                       threshold)
    scale = float(meta.get("scale", 1.0)) if cell_diameter is None else \
        scale_factor(cell_diameter)
    if precision is not None and precision not in PRECISIONS:
        raise InvalidInputError(f"--precision {precision!r} is not one of "
                                f"{', '.join(PRECISIONS)}; bfloat16 is for GPUs with "
                                "bfloat16 units (slower on most CPUs)")
    cfg = cfg.replace(**{k: v for k, v in (("peak_threshold", threshold), ("device", device),
                                           ("precision", precision)) if v is not None})
    check_device(cfg.device, name="--device" if device is not None else
                 f"device of the model's run ({cfg.device!r}; override with --device)")
    ids, paths = list_image_folder(images, pattern=pattern, name="--images")
    engine = choose_engine(engine, len(paths))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if overlays:
        (out / "overlays").mkdir(exist_ok=True)
    settings = DetectSettings(
        model_path=str(path.resolve()), widths=tuple(int(w) for w in meta["widths"]),
        device=cfg.device, scale=scale, threshold=float(cfg.peak_threshold),
        min_distance=int(cfg.peak_min_distance), peak_mode=cfg.peak_mode,
        overlays_dir=str((out / "overlays").resolve()) if overlays else None,
        num_threads=cfg.num_threads, precision=cfg.precision)
    logger.info("detect: engine=%s images=%d batch_size=%d", engine, len(paths), batch_size)
    t0 = time.perf_counter()
    if engine == "local":
        batches = _local_batches(paths, settings, batch_size)
    else:
        batches = _ray_batches(paths, settings, batch_size=batch_size,
                               concurrency=concurrency, address=ray_address)
    shards = out / "shards"
    shards.mkdir(exist_ok=True)
    for old in shards.glob("part-*.parquet"):  # of an earlier detect into this folder
        old.unlink()
    writer = _ShardWriter(shards, SHARD_IMAGES)
    for done, row in enumerate(_in_order(batches), start=1):
        writer.add(*row)
        if progress is not None:
            progress(done, len(paths))
    writer.close()
    n = merge_shards(shards, out, ids)
    seconds = time.perf_counter() - t0
    logger.info("detect: engine=%s images=%d detections=%d seconds=%.1f images_per_s=%.2f",
                engine, len(paths), n, seconds, len(paths) / max(seconds, 1e-9))
    return n


def choose_engine(engine: str, n_images: int, *, have_ray: bool | None = None) -> str:
    """``auto`` → ``ray`` for at least :data:`RAY_MIN_IMAGES` images when Ray Data is
    installed, else ``local``; ``local`` and ``ray`` are kept (``ray`` without Ray Data
    installed raises :class:`InvalidInputError` naming the extra)."""
    if have_ray is None:
        have_ray = _have_ray_data()
    if engine == "ray" and not have_ray:
        raise InvalidInputError("--engine ray needs Ray Data, which is not installed; "
                                "pip install 'pseudocell[ray]' or use --engine local")
    if engine != "auto":
        return engine
    if n_images >= RAY_MIN_IMAGES and not have_ray:
        logger.info("detect: %d images but Ray Data is not installed (pseudocell[ray]); "
                    "using the local engine", n_images)
    return "ray" if n_images >= RAY_MIN_IMAGES and have_ray else "local"


def _have_ray_data() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("ray.data") is not None
    except ModuleNotFoundError:  # no ray at all
        return False


def _local_batches(paths: list[str], settings: DetectSettings,
                   batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The local engine: :class:`ImageDetector` in this process, batch after batch."""
    det = ImageDetector(settings)
    for k in range(0, len(paths), batch_size):
        idx = np.arange(k, min(k + batch_size, len(paths)), dtype=np.int64)
        yield det({"index": idx, "path": np.array([paths[j] for j in idx], dtype=object)})


def _ray_batches(paths: list[str], settings: DetectSettings, *, batch_size: int,
                 concurrency: int | None, address: str | None
                 ) -> Iterator[dict[str, np.ndarray]]:
    """The Ray engine: Ray Data over the paths (starts or attaches to Ray; shuts down a
    Ray it started). Resources: :func:`~pseudocell.actors.detect_data.ray_detect_batches`."""
    from pseudocell.actors.detect_data import ray_detect_batches
    from pseudocell.orchestrator.ray_executor import ray_session

    with ray_session(address):
        yield from ray_detect_batches(paths, settings, concurrency=concurrency,
                                      batch_size=batch_size)


def _in_order(batches: Iterable[dict[str, np.ndarray]]
              ) -> Iterator[tuple[int, str, np.ndarray, np.ndarray, np.ndarray]]:
    """Per-image results ``(index, image_id, y, x, value)`` in index order, whatever order
    the batches arrive in (held back only until the missing images come). An image
    whose ``error`` is set raises :class:`InvalidInputError` with that message."""
    pending: dict[int, tuple] = {}
    nxt = 0
    for b in batches:
        for j in range(len(b["index"])):
            if "error" in b and b["error"][j]:
                raise InvalidInputError(str(b["error"][j]))
            k = int(b["index"][j])
            pending[k] = (k, str(b["image_id"][j]), np.asarray(b["y"][j], np.float64),
                          np.asarray(b["x"][j], np.float64),
                          np.asarray(b["value"][j], np.float64))
        while nxt in pending:
            yield pending.pop(nxt)
            nxt += 1
    if pending:
        raise RuntimeError(f"detect: results of images {sorted(pending)[:5]}... arrived "
                           f"but image {nxt} never did")


class _ShardWriter:
    """Detections of consecutive images → ``<folder>/part-<first index>.parquet``, one
    shard per ``shard_images`` images (only the current shard is held in memory)."""

    def __init__(self, folder: Path, shard_images: int) -> None:
        self.folder, self.shard_images = folder, shard_images
        self._rows: list[tuple] = []
        self._first: int | None = None
        self._count = 0

    def add(self, index: int, image: str, y: np.ndarray, x: np.ndarray,
            value: np.ndarray) -> None:
        if self._first is None:
            self._first = index
        self._rows.append((index, image, y, x, value))
        self._count += 1
        if self._count >= self.shard_images:
            self.flush()

    def flush(self) -> None:
        if self._first is None:
            return
        r = self._rows
        cols = {"index": np.concatenate([np.full(len(t[2]), t[0], np.int64) for t in r]),
                "image_id": np.array([t[1] for t in r for _ in range(len(t[2]))], object),
                "y": np.concatenate([t[2] for t in r]), "x": np.concatenate([t[3] for t in r]),
                "value": np.concatenate([t[4] for t in r])}
        write_table(str(self.folder / f"part-{self._first:08d}.parquet"), cols)
        self._rows, self._first, self._count = [], None, 0

    close = flush


def merge_shards(shards: Path, out: Path, ids: list[str]) -> int:
    """Append the shards of ``shards`` (in name = image order), one at a time, to
    ``out/detections_table.csv`` and ``out/detections.csv`` (frames in ``ids`` order);
    returns the number of detections."""
    frame = {i: k for k, i in enumerate(ids)}
    n = 0
    with open(out / "detections_table.csv", "w", newline="") as table_f, \
            open(out / "detections.csv", "w", newline="") as napari_f:
        write_points_csv(table_f, _EMPTY, extra=("value",))
        write_napari_csv(napari_f, frame, _EMPTY)
        for shard in sorted(shards.glob("part-*.parquet")):
            t = read_table(str(shard))
            if len(t["y"]) == 0:
                continue
            write_points_csv(table_f, t, extra=("value",), header=False)
            write_napari_csv(napari_f, frame, t, start=n, header=False)
            n += len(t["y"])
    return n


_EMPTY = {"image_id": np.zeros(0, object), "y": np.zeros(0), "x": np.zeros(0),
          "value": np.zeros(0)}


def _read_any(path: Path, images, name: str, allow_empty: bool = False) -> dict[str, np.ndarray]:
    layout, refs, yx = read_points_csv(path, allow_empty=allow_empty)
    if images is not None:
        return check_points(refs, yx, images, layout=layout, name=f"{name} ({str(path)!r})",
                            allow_empty=allow_empty)
    if layout == "napari3d":
        refs = [f"frame{int(r)}" for r in refs]
    elif layout == "napari2d":
        refs = ["image"] * len(refs)
    else:
        refs = [image_id(str(r)) for r in refs]  # '001cells.png' and '001cells' are one image
    return {"image_id": np.array([str(r) for r in refs], object), "y": yx[:, 0], "x": yx[:, 1]}


def evaluate_files(pred: str | Path, gt: str | Path, *, radius: float = 15.0,
                   images: str | Path | None = None) -> dict:
    """Pooled P/R/F (and per-image counts) of two point files, matched one-to-one.

    An empty ``pred`` (header only: ``detect`` found no cell) scores TP = 0; two files
    that name no image in common are refused.
    """
    if not radius > 0 or not np.isfinite(radius):
        raise InvalidInputError(f"--radius must be a finite number > 0, got {radius}")
    imgs = load_image_folder(images, name="--images") if images is not None else None
    p = _read_any(Path(pred), imgs, "--pred", allow_empty=True)
    g = _read_any(Path(gt), imgs, "--gt")
    if len(p["y"]) == 0:
        logger.warning("--pred %s holds 0 points: all %d ground-truth points are misses "
                       "(F1 = 0)", pred, len(g["y"]))
    check_same_images({str(i) for i in p["image_id"]}, {str(i) for i in g["image_id"]})
    ids = sorted(set(p["image_id"].astype(str)) | set(g["image_id"].astype(str)))
    pp, gg = points_by_image(p, ids), points_by_image(g, ids)
    per = {i: match_points(pp[i], gg[i], radius) for i in ids}
    res = pooled(list(per.values()))
    res["radius"] = radius
    res["per_image"] = {i: m.to_dict() for i, m in per.items()}
    return res
