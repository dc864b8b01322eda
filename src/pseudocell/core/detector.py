"""Masked-MSE training of the heatmap detector and tiled prediction of any image size.

Randomness is local: weights, crops and flips are drawn from generators seeded by the
caller, inside ``torch.random.fork_rng`` so the global torch state is left untouched.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pseudocell.core.parallel import SINGLE, DataParallel
from pseudocell.core.unet import UNet

__all__ = ["LOSS_WINDOW", "DetectorTrainResult", "resolve_device", "train_detector",
           "predict_heatmap", "build_unet"]

logger = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_unet(widths: Sequence[int], seed: int) -> UNet:
    """A U-Net whose initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet(in_channels=1, widths=tuple(widths), out_channels=1)


#: Optimiser steps per entry of :attr:`DetectorTrainResult.losses` (the last window of a
#: run may be shorter).
LOSS_WINDOW = 50


@dataclass
class DetectorTrainResult:
    """``state_dict`` (CPU tensors) and the mean masked loss of each logging window."""

    state_dict: dict
    losses: list[float]


def _sample_crops(
    images: Sequence[np.ndarray], targets: Sequence[np.ndarray], masks: Sequence[np.ndarray],
    anchors: list[tuple[int, int, int]], crop: int, batch: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch of crops, each centred (with jitter) on a random supervised point; flips/rot90."""
    xb = np.zeros((batch, 1, crop, crop), np.float32)
    tb = np.zeros_like(xb)
    mb = np.zeros_like(xb)
    for b in range(batch):
        i, y, x = anchors[rng.integers(len(anchors))]
        img, tgt, msk = images[i], targets[i], masks[i]
        H, W = img.shape
        ch, cw = min(crop, H), min(crop, W)
        y0 = int(np.clip(y - ch // 2 + rng.integers(-ch // 3, ch // 3 + 1), 0, H - ch))
        x0 = int(np.clip(x - cw // 2 + rng.integers(-cw // 3, cw // 3 + 1), 0, W - cw))
        sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        parts = [img[sl], tgt[sl], msk[sl].astype(np.float32)]
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        for j, a in enumerate(parts):
            a = np.rot90(a, k)
            if flip:
                a = a[:, ::-1]
            parts[j] = a
        for dst, a in zip((xb, tb, mb), parts):
            dst[b, 0, : a.shape[0], : a.shape[1]] = a  # smaller images: zero pad, mask 0
    return xb, tb, mb


def train_detector(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    widths: Sequence[int],
    iters: int,
    batch: int,
    crop: int,
    lr: float,
    seed: int,
    device: str = "auto",
    progress: Callable[[int, float], None] | None = None,
    parallel: DataParallel = SINGLE,
) -> DetectorTrainResult:
    """Train a U-Net on masked MSE: loss only where ``mask`` is true.

    Parameters
    ----------
    images : sequence of ndarray (H_i, W_i), float32, normalised
    targets : sequence of ndarray (H_i, W_i), float32 in [0, 1] (see ``make_target``)
    masks : sequence of ndarray (H_i, W_i), bool
    widths, iters, batch, crop, lr : U-Net widths and Adam settings
    seed : int
        Seeds the weights, crop positions and augmentations.
    device : str
        ``auto`` | ``cpu`` | ``cuda[:N]``.
    progress : callable(step, loss), optional
        Called every 50 steps.
    parallel : DataParallel
        Data-parallel worker settings: each worker trains on its slice of every batch
        (see :mod:`pseudocell.core.parallel`); the default is one process.

    Returns
    -------
    DetectorTrainResult

    Raises
    ------
    ValueError
        If no image has any supervised pixel.
    """
    dev = resolve_device(device)
    rng = np.random.default_rng(seed)
    anchors = []
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys):
            step = max(1, len(ys) // 200)  # subsample anchor pixels for memory
            anchors.extend((i, int(y), int(x)) for y, x in zip(ys[::step], xs[::step]))
    if not anchors:
        raise ValueError("no supervised pixel: every loss mask is empty (no points given)")
    base = build_unet(widths, seed).to(dev)
    model = parallel.prepare(base)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    mine = parallel.shard(np.arange(batch))
    losses: list[float] = []
    window: list[float] = []
    for step in range(1, iters + 1):
        xb, tb, mb = (a[mine] for a in _sample_crops(images, targets, masks, anchors, crop,
                                                     batch, rng))
        x = torch.from_numpy(xb).to(dev)
        t = torch.from_numpy(tb).to(dev)
        m = torch.from_numpy(mb).to(dev)
        out = model(x)
        loss = ((out - t) ** 2 * m).sum() / m.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(float(loss.detach()))
        if step % LOSS_WINDOW == 0 or step == iters:
            losses.append(float(np.mean(window)))
            window = []
            if progress is not None:
                progress(step, losses[-1])
            logger.debug("detector step=%d loss=%.5f", step, losses[-1])
    state = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
    return DetectorTrainResult(state_dict=state, losses=losses)


def load_unet(state_dict: dict, widths: Sequence[int], device: str = "auto") -> UNet:
    """Rebuild a trained U-Net in eval mode on ``device``."""
    model = UNet(in_channels=1, widths=tuple(widths), out_channels=1)
    model.load_state_dict(state_dict)
    return model.to(resolve_device(device)).eval()


__all__.append("load_unet")


@torch.no_grad()
def predict_heatmap(model: UNet, image: np.ndarray, *, tile: int = 512, margin: int = 32) -> np.ndarray:
    """Predict a heatmap for an image of any size by overlapping tiles.

    Each tile is read with ``margin`` px of context on every side (reflect-padded at
    the image border) and only its centre is kept, so tile seams carry full context.

    Parameters
    ----------
    model : UNet in eval mode (its device is used)
    image : ndarray of shape (H, W), float32
    tile : int
        Output tile side; rounded up to a multiple of ``model.multiple``.
    margin : int
        Context on each side of a tile.

    Returns
    -------
    ndarray of shape (H, W), float32
    """
    img = np.asarray(image, dtype=np.float32)
    H, W = img.shape
    mult = model.multiple
    dev = next(model.parameters()).device
    tile = int(np.ceil(tile / mult) * mult)
    th, tw = min(tile, H), min(tile, W)
    out = np.zeros((H, W), np.float32)
    pad_mode = "reflect" if min(H, W) > margin else "symmetric"
    padded = np.pad(img, margin, mode=pad_mode)
    for y0 in range(0, H, th):
        for x0 in range(0, W, tw):
            y1, x1 = min(y0 + th, H), min(x0 + tw, W)
            win = padded[y0: y1 + 2 * margin, x0: x1 + 2 * margin]
            h, w = win.shape
            ph, pw = (-h) % mult, (-w) % mult
            win = np.pad(win, ((0, ph), (0, pw)), mode="symmetric")
            pred = model(torch.from_numpy(np.ascontiguousarray(win))[None, None].to(dev))
            pred = pred[0, 0].float().cpu().numpy()
            out[y0:y1, x0:x1] = pred[margin: margin + (y1 - y0), margin: margin + (x1 - x0)]
    return out
