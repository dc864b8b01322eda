"""The baselines of the quality benchmark (pseudocell itself runs through the orchestrator).

Every learned baseline uses the same detector architecture and training budget as the
loop (``cfg.unet_widths``, ``cfg.detector_iters`` ...).
"""
from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from pseudocell.config import Config
from pseudocell.core.classical import log_detect
from pseudocell.core.detector import load_unet, predict_heatmap, train_detector
from pseudocell.core.metrics import match_points, near_any, pooled
from pseudocell.core.patches import crop_patches
from pseudocell.core.peaks import PEAK_FLOOR, calibrate_threshold, find_peaks, values_at
from pseudocell.core.pu import estimate_prior_elkan_noto, pu_features, train_pu
from pseudocell.core.scale import from_scaled, resize_image, to_scaled
from pseudocell.core.targets import make_target
from pseudocell.data.points import points_by_image
from pseudocell.validation import ImageSet

__all__ = ["detect_supervised", "tune_log_on_points", "tune_log_full", "detect_log",
           "pu_direct"]

logger = logging.getLogger(__name__)


def _scaled(images: ImageSet, s: float) -> list[np.ndarray]:
    return [resize_image(im, s) for im in images.images]


def detect_supervised(train: ImageSet, points: dict, test: ImageSet, cfg: Config,
                      seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Train on ``points`` with the loss on EVERY pixel (points not given are background),
    then detect on ``test``. With partial points this is baseline 1; with all ground-truth
    points it is the fully supervised upper bound.

    Like the loop it works on images resized by ``scale`` (the run's cell size) and, with
    ``cfg.peak_threshold=None``, calibrates its peak threshold on the training images
    (:func:`~pseudocell.core.peaks.calibrate_threshold` at ``points``); detections are
    returned in original pixels."""
    pos = points_by_image(points, train.ids)
    imgs = _scaled(train, scale)
    spos = {i: to_scaled(pos[i], im.shape, scale) for i, im in zip(train.ids, train.images)}
    tgts, msks = [], []
    for i, im in zip(train.ids, imgs):
        t, _ = make_target(im.shape, spos[i], None, cfg.sigma, cfg.mask_radius)
        tgts.append(t)
        msks.append(np.ones(im.shape, bool))
    res = train_detector(imgs, tgts, msks, widths=cfg.unet_widths,
                         iters=cfg.detector_iters, batch=cfg.detector_batch,
                         crop=cfg.detector_crop, lr=cfg.detector_lr, seed=seed,
                         device=cfg.device, head_init=cfg.detector_head_init or "default")
    net = load_unet(res.state_dict, cfg.unet_widths, cfg.device)
    thr = cfg.peak_threshold
    if thr is None:
        cand, pv = [], []
        for i, im in zip(train.ids, imgs):
            h = predict_heatmap(net, im, precision=cfg.precision)
            cand.append(find_peaks(h, threshold=PEAK_FLOOR, min_distance=cfg.peak_min_distance)[1])
            pv.append(values_at(h, spos[i], cfg.peak_min_distance))
        thr = calibrate_threshold(np.concatenate(cand), np.concatenate(pv), recall=cfg.peak_recall)
    out = {}
    for i, im in zip(test.ids, test.images):
        pts = find_peaks(predict_heatmap(net, resize_image(im, scale), precision=cfg.precision),
                         threshold=thr,
                         min_distance=cfg.peak_min_distance, mode=cfg.peak_mode)[0]
        out[i] = from_scaled(pts, im.shape, scale)
    return out


def _log_response(im: np.ndarray, sigma: float, polarity: str) -> np.ndarray:
    sign = -1.0 if polarity == "bright" else 1.0
    return sign * sigma**2 * ndimage.gaussian_laplace(np.asarray(im, np.float64), sigma)


def tune_log_on_points(train: ImageSet, points: dict, *, sigmas=(3.0, 4.0, 5.0, 6.0, 7.0),
                       min_distance: int = 6, scale: float = 1.0) -> dict:
    """Pick LoG polarity and scale from the annotated points, the threshold by Otsu.

    Scale and polarity: the largest mean z-scored response at the annotated points
    (cells stand out most from the image's own response distribution). Threshold: Otsu's
    threshold of the responses at all local maxima of the training images (cells vs
    clutter). Only positives are annotated, so no rule can tune precision directly; a
    threshold at a recall quantile of the annotated cells collapsed to ~0 on the demo
    set (training F 0.29 against 0.74 with Otsu).
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu

    pos = points_by_image(points, train.ids)
    imgs = _scaled(train, scale)
    best = None
    for pol in ("dark", "bright"):
        for s in sigmas:
            z = []
            for i, im0, im in zip(train.ids, train.images, imgs):
                if len(pos[i]) == 0:
                    continue
                r = _log_response(im, s, pol)
                yx = np.clip(np.rint(to_scaled(pos[i], im0.shape, scale)).astype(int), 0,
                             np.array(im.shape) - 1)
                z.append((r[yx[:, 0], yx[:, 1]] - r.mean()) / (r.std() + 1e-12))
            score = float(np.mean(np.concatenate(z)))
            if best is None or score > best[0]:
                best = (score, pol, s)
    _, pol, s = best
    peaks = []
    for im in imgs:
        r = _log_response(im, s, pol)
        c = peak_local_max(r, min_distance=min_distance, exclude_border=False)
        peaks.append(r[c[:, 0], c[:, 1]])
    v = np.concatenate(peaks)
    thr = float(threshold_otsu(v)) if len(np.unique(v)) > 1 else float(v.max(initial=0.0))
    return {"polarity": pol, "sigma": s, "threshold": thr}


def detect_log(test: ImageSet, params: dict, min_distance: int = 6,
               scale: float = 1.0) -> dict[str, np.ndarray]:
    """LoG detections on every test image (resized by ``scale``, the run's cell size)
    with ``params`` from :func:`tune_log_on_points` or :func:`tune_log_full`; points in
    original pixels."""
    return {i: from_scaled(log_detect(resize_image(im, scale), sigma=params["sigma"],
                                      threshold=params["threshold"],
                                      polarity=params["polarity"], min_distance=min_distance),
                           im.shape, scale)
            for i, im in zip(test.ids, test.images)}


def tune_log_full(train: ImageSet, gt: dict, *, radius: float, scale: float = 1.0,
                  sigmas=(2.0, 3.0, 4.0, 5.0, 6.0, 7.0), min_distance: int = 6) -> dict:
    """The classical upper bound: LoG polarity, scale and threshold chosen by grid search
    for the best pooled F1 on the training images against their FULL ground truth (at
    ``radius`` original px; images resized by ``scale``). Returns the params and the
    training F1."""
    from skimage.feature import peak_local_max

    g = points_by_image(gt, train.ids)
    imgs = _scaled(train, scale)
    best: dict | None = None
    for pol in ("dark", "bright"):
        for sg in sigmas:
            peaks = []
            for i, im, sim in zip(train.ids, train.images, imgs):
                r = _log_response(sim, sg, pol)
                c = peak_local_max(r, min_distance=min_distance, threshold_abs=0.0,
                                   exclude_border=False).reshape(-1, 2)
                peaks.append((from_scaled(c.astype(np.float64), im.shape, scale),
                              r[c[:, 0], c[:, 1]]))
            vals = np.concatenate([v for _, v in peaks])
            if not len(vals):
                continue
            for thr in np.unique(np.quantile(vals, np.linspace(0.0, 0.98, 50))):
                f = pooled([match_points(p[v >= thr], g[i], radius)
                            for i, (p, v) in zip(train.ids, peaks)])
                if best is None or f["f1"] > best["train_f1"]:
                    best = {"polarity": pol, "sigma": sg, "threshold": float(thr),
                            "train_f1": f["f1"]}
    return best or {"polarity": "bright", "sigma": 3.0, "threshold": 0.0, "train_f1": 0.0}


def pu_direct(train: ImageSet, points: dict, round0_peaks: dict, test: ImageSet,
              test_peaks: dict, cfg: Config, seed: int,
              scale: float = 1.0) -> tuple[dict[str, np.ndarray], float]:
    """Classify round-0 candidates with an nnPU classifier, no detector re-training.

    P = patches at the annotated points, U = round-0 detections on the training images
    farther than ``mask_radius`` from any annotated point; the prior comes from
    :func:`estimate_prior_elkan_noto`. Test detections with a PU score > 0 are kept.
    Patches come from the images resized by ``scale`` (the run's cell size), as in the
    loop.
    Returns (detections per test image, the prior used).
    """
    pos = points_by_image(points, train.ids)
    pp, uu = [], []
    for i, im in zip(train.ids, train.images):
        det = round0_peaks[i]
        det = det[~near_any(det, pos[i], cfg.mask_radius / scale)]
        sim = resize_image(im, scale)
        if len(pos[i]):
            pp.append(crop_patches(sim, to_scaled(pos[i], im.shape, scale), cfg.patch_size))
        if len(det):
            uu.append(crop_patches(sim, to_scaled(det, im.shape, scale), cfg.patch_size))
    if not pp or sum(len(u) for u in uu) < 10:
        logger.warning("pu_direct: too few unlabeled detections to learn from; keeping the "
                       "round-0 detections unchanged")
        return {i: test_peaks[i] for i in test.ids}, float("nan")
    xp, xu = np.concatenate(pp), np.concatenate(uu)
    prior = estimate_prior_elkan_noto(xp, xu, seed)
    res = train_pu(xp, xu, prior=prior, epochs=cfg.pu_epochs, lr=cfg.pu_lr,
                   weight_decay=cfg.pu_weight_decay, batch=cfg.pu_batch,
                   feature_dim=cfg.pu_feature_dim, seed=seed, device=cfg.device)
    out = {}
    for i, im in zip(test.ids, test.images):
        det = test_peaks[i]
        if len(det) == 0:
            out[i] = det
            continue
        patches = crop_patches(resize_image(im, scale), to_scaled(det, im.shape, scale),
                               cfg.patch_size)
        _, score = pu_features(res.state_dict, patches,
                               feature_dim=cfg.pu_feature_dim, device=cfg.device)
        out[i] = det[score > 0]
    return out, prior
