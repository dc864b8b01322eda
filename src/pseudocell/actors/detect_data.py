"""Detection in many image files: a plain batch detector and the Ray Data pipeline that
runs it at scale (``pseudocell detect --engine ray``).

:class:`ImageDetector` is an ordinary class: ``pseudocell.inference`` calls it in-process
(``--engine local``), and :func:`ray_detect_batches` hands the class to Ray Data's
``map_batches`` as a stateful predictor (one model per actor, loaded once). Both engines
feed it the same batches of ``{"index", "path"}`` and get the same per-image results, so
their outputs are identical by construction. Ray is imported inside
:func:`ray_detect_batches` only.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DetectSettings", "ImageDetector", "RESULT_COLUMNS", "ray_detect_batches"]

logger = logging.getLogger(__name__)

#: Columns of one result batch: one row per image; ``y``, ``x``, ``value`` hold that
#: image's detections (variable length, float64 / float64 / float32); ``error`` is ""
#: or the message of the image's :class:`~pseudocell.errors.InvalidInputError` (when the
#: detector reports errors instead of raising them).
RESULT_COLUMNS = ("index", "image_id", "n", "y", "x", "value", "error")


@dataclass(frozen=True, kw_only=True)
class DetectSettings:
    """Everything a detector worker needs, small and picklable (sent to Ray actors).

    ``model_path`` is a checked model file (``{"state_dict", "meta"}``) that every worker
    can read; ``scale`` is the resize factor of the model's run (images are resized by it
    before prediction and detections mapped back); ``threshold``, ``min_distance`` and
    ``peak_mode`` are :func:`~pseudocell.core.peaks.find_peaks`'s. ``overlays_dir``: write
    ``<dir>/<image id>.png`` per image when set. ``num_threads``: torch CPU threads of the
    worker (None keeps torch's default). ``precision``: the forward pass's arithmetic
    (:func:`~pseudocell.core.detector.predict_heatmap`).
    """

    model_path: str
    widths: tuple[int, ...]
    device: str = "cpu"
    scale: float = 1.0
    threshold: float
    min_distance: int = 6
    peak_mode: str = "absolute"
    overlays_dir: str | None = None
    num_threads: int | None = None
    precision: str = "float32"


class ImageDetector:
    """Detect cells in batches of image files with one loaded model.

    Runs in the calling process (local engine) or inside a Ray Data actor (Ray engine);
    construction loads the model (blocking, ~the size of ``model.pt``). A file that cannot
    be read or holds no usable image raises
    :class:`~pseudocell.errors.InvalidInputError` naming the file; with
    ``report_errors`` its message goes to the row's ``error`` column instead (Ray Data
    wraps an actor's exception in its own, with the message only as traceback text).
    """

    def __init__(self, settings: DetectSettings, report_errors: bool = False) -> None:
        import torch

        from pseudocell.core.detector import load_unet
        from pseudocell.validation import load_model_file

        self.settings = settings
        self.report_errors = report_errors
        if settings.num_threads:
            torch.set_num_threads(int(settings.num_threads))
        ck = load_model_file(settings.model_path, name="--model")
        self.net_ = load_unet(ck["state_dict"], settings.widths, settings.device)

    def detect(self, path: str) -> tuple[str, np.ndarray, np.ndarray]:
        """Detections of one image file.

        Returns
        -------
        image_id : str
        points : ndarray of shape (n, 2), float64, (y, x) in the file's pixels
        values : ndarray of shape (n,), float32, heatmap value at each peak
        """
        from pseudocell.core.detector import predict_heatmap
        from pseudocell.core.peaks import find_peaks
        from pseudocell.core.scale import from_scaled, resize_image
        from pseudocell.data.images import image_id
        from pseudocell.validation import read_checked_image

        s = self.settings
        im, _ = read_checked_image(path, name="--images")
        pts, vals = find_peaks(predict_heatmap(self.net_, resize_image(im, s.scale),
                                               precision=s.precision),
                               threshold=s.threshold, min_distance=s.min_distance,
                               mode=s.peak_mode)
        pts = from_scaled(pts, im.shape, s.scale)
        i = image_id(path)
        if s.overlays_dir is not None:
            from pseudocell.data.overlay import draw_overlay

            draw_overlay(Path(s.overlays_dir) / f"{i}.png", im, {"detection": pts})
        logger.debug("image=%s detections=%d", i, len(pts))
        return i, np.asarray(pts, np.float64).reshape(-1, 2), np.asarray(vals, np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Detect in a batch ``{"index": (B,) int64, "path": (B,) str}``.

        Returns one row per image, in the batch's order: ``index`` (B,) int64,
        ``image_id`` (B,) str, ``n`` (B,) int64 (detections), and ``y``, ``x`` (float64),
        ``value`` (float32) as (B,) object arrays of 1-D arrays of length ``n``, and
        ``error`` (B,) str ("" unless ``report_errors`` caught the image's error).
        """
        from pseudocell.data.images import image_id
        from pseudocell.errors import InvalidInputError

        out: dict[str, list] = {c: [] for c in RESULT_COLUMNS}
        for k, p in zip(np.asarray(batch["index"]).tolist(), batch["path"]):
            err = ""
            try:
                i, pts, vals = self.detect(str(p))
            except InvalidInputError as e:
                if not self.report_errors:
                    raise
                i, err = image_id(str(p)), str(e)
                pts, vals = np.zeros((0, 2)), np.zeros(0, np.float32)
            for c, v in zip(RESULT_COLUMNS, (k, i, len(pts), pts[:, 0], pts[:, 1], vals, err)):
                out[c].append(v)
        res = {"index": np.asarray(out["index"], np.int64),
               "image_id": np.asarray(out["image_id"], dtype=object),
               "n": np.asarray(out["n"], np.int64),
               "error": np.asarray(out["error"], dtype=object)}
        for c in ("y", "x", "value"):
            col = np.empty(len(out[c]), dtype=object)
            col[:] = out[c]
            res[c] = col
        return res


def ray_detect_batches(paths: Sequence[str], settings: DetectSettings, *,
                       concurrency: int | None, batch_size: int
                       ) -> Iterator[dict[str, np.ndarray]]:
    """Stream :class:`ImageDetector` results over ``paths`` through Ray Data.

    ``ray.data.from_items`` of ``{"index", "path"}`` (paths only: each actor reads its own
    images) → ``map_batches(ImageDetector, ActorPoolStrategy(size=concurrency),
    batch_size=batch_size)`` → batches of :data:`RESULT_COLUMNS`, in the order of
    ``paths`` (``preserve_order``); a bad image's error is in its row's ``error`` (the
    caller raises it). Runs on the driver; Ray must be initialised.

    Resources: when the cluster has GPUs and ``settings.device`` is not ``cpu``, each
    actor takes one GPU (and no CPU) and ``concurrency`` defaults to the number of GPUs;
    otherwise each actor takes ``settings.num_threads`` CPUs and torch threads (default
    1), ``concurrency`` defaulting to the cluster's CPUs divided by that. Memory stays
    bounded: Ray Data's streaming executor keeps only a few batches in flight.
    """
    from dataclasses import replace

    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0)) if settings.device != "cpu" else 0
    if gpus:
        settings = replace(settings, device="cuda")
        res = {"num_gpus": 1, "num_cpus": 0}
    else:
        threads = settings.num_threads or 1
        settings = replace(settings, device="cpu", num_threads=threads)
        res = {"num_cpus": threads}
    concurrency = concurrency or max(1, gpus or int(ray.cluster_resources().get("CPU", 1))
                                     // res["num_cpus"])
    logger.info("detect on Ray Data: actors=%d gpus_per_actor=%d batch_size=%d",
                concurrency, 1 if gpus else 0, batch_size)

    ctx = ray.data.DataContext.get_current()  # the process's; restored at the end
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars,
             ctx.print_on_execution_start)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    items = [{"index": k, "path": str(p)} for k, p in enumerate(paths)]
    n_blocks = max(1, min(len(items), -(-len(items) // batch_size)))
    ds = ray.data.from_items(items, override_num_blocks=n_blocks)
    ds = ds.map_batches(ImageDetector, fn_constructor_kwargs={"settings": settings,
                                                              "report_errors": True},
                        batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=concurrency), **res)
    try:
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    finally:
        (ctx.execution_options.preserve_order, ctx.enable_progress_bars,
         ctx.print_on_execution_start) = saved
