"""Masked-MSE training of the heatmap detector and tiled prediction of any image size.

Randomness is local: weights, crops and flips are drawn from generators seeded by the
caller, inside ``torch.random.fork_rng`` so the global torch state is left untouched.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pseudocell.core.domain import DomainHead, augment_intensity, ganin_lambda, grad_reverse
from pseudocell.core.parallel import SINGLE, DataParallel
from pseudocell.core.unet import UNet

__all__ = ["LOSS_WINDOW", "DetectorTrainResult", "DomainTask", "resolve_device",
           "train_detector", "predict_heatmap", "build_unet", "heatmap_passes", "DIHEDRAL"]

logger = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: Initialisations of the detector's output layer: PyTorch's default, or zero weights
#: and bias (the untrained detector says "no cell" everywhere).
HEAD_INITS = ("default", "zero")


def build_unet(widths: Sequence[int], seed: int, dropout: float = 0.0,
               head_init: str = "default") -> UNet:
    """A U-Net whose initial weights depend only on ``seed``.

    ``head_init="zero"`` zeroes the output 1x1 convolution (weights and bias): the
    untrained network outputs 0 everywhere, so training starts from "no cell" whatever
    the seed, rather than from a random offset the masked MSE must first remove. On the
    human-in-the-loop benchmark one round whose default start began at 5 times the usual
    first-window loss (bright-field seed 0's last) ended at held-out F1 0.844 against
    0.954 the round before; retrained with a zero head, 0.954. Over all 144 of that
    benchmark's round-to-round changes the first-window loss did not predict the falls
    (Spearman -0.03): this removes one source of variance, not every fall.
    """
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(in_channels=1, widths=tuple(widths), out_channels=1, dropout=dropout)
    if head_init == "zero":
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.zero_()
    return net


#: Optimiser steps per entry of :attr:`DetectorTrainResult.losses` (the last window of a
#: run may be shorter).
LOSS_WINDOW = 50


@dataclass
class DetectorTrainResult:
    """``state_dict`` (CPU tensors) and the mean masked loss of each logging window;
    with a :class:`DomainTask`, also the domain classifier's accuracy and loss per
    window (DANN works when the accuracy hovers near 0.5)."""

    state_dict: dict
    losses: list[float]
    domain_accuracy: list[float] = field(default_factory=list)
    domain_loss: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class DomainTask:
    """DANN: a domain classifier behind a gradient-reversal layer on the U-Net's
    encoder level ``level`` (0: first block, -1: bottleneck), trained to tell source
    crops from crops of ``images`` (target, unlabeled; (H, W) float32 each), with the
    reversal weight :func:`~pseudocell.core.domain.ganin_lambda` (progress, ``grl_lambda``).
    """

    images: Sequence[np.ndarray]
    level: int = -1
    grl_lambda: float = 1.0


class _Dann(nn.Module):
    """U-Net plus domain head on one module (so data-parallel wrappers see both)."""

    def __init__(self, unet: UNet, level: int) -> None:
        super().__init__()
        self.unet, self.level, self.lam = unet, level, 0.0
        self.head = DomainHead(unet.widths[level])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, feats = self.unet.forward_tap(x, self.level)
        return out, self.head(grad_reverse(feats, self.lam))


def _random_crops(images: Sequence[np.ndarray], crop: int, batch: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``batch`` crops at uniform random places of random images, flipped/rotated like
    :func:`_sample_crops`; zero-padded where an image is smaller than ``crop``."""
    xb = np.zeros((batch, 1, crop, crop), np.float32)
    for b in range(batch):
        img = images[rng.integers(len(images))]
        H, W = img.shape
        ch, cw = min(crop, H), min(crop, W)
        y0, x0 = int(rng.integers(H - ch + 1)), int(rng.integers(W - cw + 1))
        a = np.rot90(img[y0:y0 + ch, x0:x0 + cw], int(rng.integers(4)))
        if rng.integers(2):
            a = a[:, ::-1]
        xb[b, 0, :a.shape[0], :a.shape[1]] = a
    return xb


def _anchors(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Crop centres: about 200 supervised pixels of every mask, as rows (image, y, x)
    of an (n, 3) int64 array (a few KB per image; the masks are read one at a time)."""
    rows = []
    for i in range(len(masks)):
        ys, xs = np.nonzero(masks[i])
        if len(ys):
            step = max(1, len(ys) // 200)  # subsample anchor pixels for memory
            rows.append(np.stack([np.full(len(ys[::step]), i), ys[::step], xs[::step]],
                                 axis=1))
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), np.int64)


def _sample_crops(
    images: Sequence[np.ndarray], targets: Sequence[np.ndarray], masks: Sequence[np.ndarray],
    anchors: np.ndarray, crop: int, batch: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch of crops, each centred (with jitter) on a random supervised point; flips/rot90."""
    xb = np.zeros((batch, 1, crop, crop), np.float32)
    tb = np.zeros_like(xb)
    mb = np.zeros_like(xb)
    for b in range(batch):
        i, y, x = (int(v) for v in anchors[rng.integers(len(anchors))])
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
    augment: bool = False,
    domain: DomainTask | None = None,
    dropout: float = 0.0,
    head_init: str = "default",
    init_state: dict | None = None,
) -> DetectorTrainResult:
    """Train a U-Net on masked MSE: loss only where ``mask`` is true.

    Parameters
    ----------
    images : sequence of ndarray (H_i, W_i), float32, normalised
    targets : sequence of ndarray (H_i, W_i), float32 in [0, 1] (see ``make_target``)
    masks : sequence of ndarray (H_i, W_i), bool
        Any indexable sequences: items are read when a crop needs them (the stages pass
        lazily read, cached ones), so the three need not fit in memory at once.
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
    augment : bool
        Jitter each crop's intensity response (:func:`~pseudocell.core.domain.
        augment_intensity`): the input-level augmentation baseline of domain adaptation.
    domain : DomainTask, optional
        Also train a DANN domain classifier against crops of the target images; each
        step adds its cross-entropy (source crops = 0, as many random target crops = 1,
        each set in its own forward pass) to the masked MSE, through the
        gradient-reversal layer.
    dropout : float
        The U-Net's channel dropout (see :class:`~pseudocell.core.unet.UNet`).
    head_init : {"default", "zero"}
        The output layer's initialisation (see :func:`build_unet`).
    init_state : dict, optional
        Start from these U-Net weights (a ``state_dict`` of the same ``widths``, e.g. the
        previous round's detector) instead of ``seed``'s initialisation and
        ``head_init``; the optimiser still starts afresh.

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
    anchors = _anchors(masks)
    if not len(anchors):
        raise ValueError("no supervised pixel: every loss mask is empty (no points given)")
    base = build_unet(widths, seed, dropout, head_init)
    if init_state is not None:
        try:
            base.load_state_dict(init_state)
        except RuntimeError as e:
            raise ValueError(f"init_state does not fit a U-Net of widths {tuple(widths)}: "
                             f"{e}") from None
    base = base.to(dev)
    dann = None
    if domain is not None:
        if not len(domain.images):
            raise ValueError("domain: no target image to tell the source from")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            dann = _Dann(base, domain.level).to(dev)
    model = parallel.prepare(dann if dann is not None else base)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    mine = parallel.shard(np.arange(batch))
    res = DetectorTrainResult(state_dict={}, losses=[])
    window: list[float] = []
    dom_window: list[tuple[float, float]] = []
    for step in range(1, iters + 1):
        xb, tb, mb = _sample_crops(images, targets, masks, anchors, crop, batch, rng)
        if augment:
            xb = augment_intensity(xb, rng)
        xb, tb, mb = xb[mine], tb[mine], mb[mine]
        x = torch.from_numpy(xb).to(dev)
        t = torch.from_numpy(tb).to(dev)
        m = torch.from_numpy(mb).to(dev)
        if dann is None:
            out = model(x)
            loss = mse = ((out - t) ** 2 * m).sum() / m.sum().clamp_min(1.0)
        else:
            xt = _random_crops(domain.images, crop, batch, rng)[mine]
            dann.lam = ganin_lambda((step - 1) / max(1, iters - 1), domain.grl_lambda)
            # two passes, so that BatchNorm never mixes source and target crops' batch
            # statistics: in one pass of both (U2OS -> NIH3T3, seed 0) the domain
            # classifier won (accuracy 0.83) and held-out F1 fell to 0.53; in two it
            # hovers at 0.51 and F1 is 0.83
            out, logit_s = model(x)
            _, logit_t = model(torch.from_numpy(xt).to(dev))
            logit = torch.cat([logit_s, logit_t])
            n = len(xb)
            truth = torch.cat([torch.zeros(n), torch.ones(len(xt))]).to(dev)
            dom = nn.functional.binary_cross_entropy_with_logits(logit, truth)
            mse = ((out - t) ** 2 * m).sum() / m.sum().clamp_min(1.0)
            loss = mse + dom
            acc = float(((logit.detach() > 0).float() == truth).float().mean())
            dom_window.append((acc, float(dom.detach())))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(float(mse.detach()))
        if step % LOSS_WINDOW == 0 or step == iters:
            res.losses.append(float(np.mean(window)))
            window = []
            if dom_window:
                acc, dl = np.mean(dom_window, axis=0)
                res.domain_accuracy.append(float(acc))
                res.domain_loss.append(float(dl))
                dom_window = []
                logger.debug("detector step=%d domain accuracy=%.3f", step, acc)
            if progress is not None:
                progress(step, res.losses[-1])
            logger.debug("detector step=%d loss=%.5f", step, res.losses[-1])
    res.state_dict = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
    return res


def load_unet(state_dict: dict, widths: Sequence[int], device: str = "auto",
              dropout: float = 0.0) -> UNet:
    """Rebuild a trained U-Net in eval mode on ``device``."""
    model = UNet(in_channels=1, widths=tuple(widths), out_channels=1, dropout=dropout)
    model.load_state_dict(state_dict)
    return model.to(resolve_device(device)).eval()


__all__.append("load_unet")


def _pad_input(img: torch.Tensor, margin: int) -> torch.Tensor:
    """``img`` (H, W) with ``margin`` px of reflected context on every side, on its own
    device (as ``np.pad(mode="reflect")``; ``"symmetric"`` for images not larger than
    the margin, done on the host: such images are tiny)."""
    H, W = img.shape
    if min(H, W) > margin:
        return nn.functional.pad(img[None, None], (margin,) * 4, mode="reflect")[0, 0]
    host = np.pad(img.cpu().numpy(), margin, mode="symmetric")
    return torch.from_numpy(host).to(img.device)


def _pad_to(win: torch.Tensor, mult: int) -> torch.Tensor:
    """Extend (h, w) at the bottom and right to multiples of ``mult`` by mirroring the
    last rows/columns (``np.pad(mode="symmetric")``; needs h, w >= the pad)."""
    ph, pw = (-win.shape[0]) % mult, (-win.shape[1]) % mult
    if ph:
        win = torch.cat([win, win[win.shape[0] - ph:].flip(0)], 0)
    if pw:
        win = torch.cat([win, win[:, win.shape[1] - pw:].flip(1)], 1)
    return win


#: Arithmetic of prediction (``Config.precision``, ``predict_heatmap(precision=)``):
#: ``float32``, or ``bfloat16`` autocast (the same numbers on CPU and GPU up to kernel
#: rounding, so an F1 measured on the CPU carries over; float16 is not offered: its
#: range needs loss scaling in training and gives no gain over bfloat16 in inference).
PRECISIONS = ("float32", "bfloat16")
__all__.append("PRECISIONS")


@torch.no_grad()
def predict_heatmap(model: UNet, image: np.ndarray, *, tile: int = 512, margin: int = 32,
                    batch: int | None = None, precision: str = "float32") -> np.ndarray:
    """Predict a heatmap for an image of any size by overlapping tiles.

    Each tile is read with ``margin`` px of context on every side (reflect-padded at
    the image border) and only its centre is kept, so tile seams carry full context.
    The image goes to the model's device once; padding, tiling and stitching happen
    there, and the heatmap comes back once.

    Parameters
    ----------
    model : UNet in eval mode (its device is used)
    image : ndarray of shape (H, W), float32
    tile : int
        Output tile side; rounded up to a multiple of ``model.multiple``.
    margin : int
        Context on each side of a tile.
    batch : int, optional
        Tiles of one shape per forward pass. Default: 8 on an accelerator, 1 on the
        CPU (where a larger batch is no faster, and one tile per pass keeps the bytes
        of every earlier CPU result).
    precision : {"float32", "bfloat16"}
        Arithmetic of the forward pass: ``bfloat16`` runs it under
        :func:`torch.autocast` (convolutions in bfloat16, the output back in float32):
        faster on accelerators with bfloat16 units, slower on most CPUs. The heatmap
        moves by ~1e-2 (bfloat16 keeps 8 bits of mantissa); see :data:`PRECISIONS`.

    Returns
    -------
    ndarray of shape (H, W), float32
    """
    dev = next(model.parameters()).device
    if batch is None:
        batch = 1 if dev.type == "cpu" else 8
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bfloat16" else \
        contextlib.nullcontext()
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(dev)
    H, W = img.shape
    mult = model.multiple
    tile = int(np.ceil(tile / mult) * mult)
    th, tw = min(tile, H), min(tile, W)
    out = torch.zeros((H, W), dtype=torch.float32, device=dev)
    padded = _pad_input(img, margin)
    groups: dict[tuple[int, int], list] = {}  # window shape -> [(y0, y1, x0, x1, window)]
    for y0 in range(0, H, th):
        for x0 in range(0, W, tw):
            y1, x1 = min(y0 + th, H), min(x0 + tw, W)
            win = _pad_to(padded[y0: y1 + 2 * margin, x0: x1 + 2 * margin], mult)
            groups.setdefault(tuple(win.shape), []).append((y0, y1, x0, x1, win))
    with amp:  # one context: autocast's cache of bfloat16 weights lasts the whole image
        for tiles in groups.values():
            for k in range(0, len(tiles), batch):
                part = tiles[k:k + batch]
                pred = model(torch.stack([t[4] for t in part])[:, None]).float()
                for (y0, y1, x0, x1, _), p in zip(part, pred[:, 0]):
                    out[y0:y1, x0:x1] = p[margin: margin + (y1 - y0),
                                          margin: margin + (x1 - x0)]
    return out.cpu().numpy()


#: The 8 flips/rotations of the square: (k quarter turns, then a left-right flip?).
DIHEDRAL = tuple((k, f) for f in (False, True) for k in range(4))


@torch.no_grad()
def heatmap_passes(model: UNet, image: np.ndarray, *, method: str, passes: int,
                   seed: int, precision: str = "float32") -> np.ndarray:
    """``passes`` stochastic heatmaps of one image, for the uncertainty of each peak.

    ``method="tta"``: the model on the image turned/flipped by the first ``passes``
    elements of :data:`DIHEDRAL` (at most 8), each heatmap turned back (pass 0 is the
    plain prediction). ``method="mc-dropout"``: ``passes`` predictions with the model's
    dropout layers active (the model must have ``dropout > 0``), seeded by ``seed``
    without touching the global torch state. ``precision`` as :func:`predict_heatmap`.

    Parameters
    ----------
    model : UNet in eval mode
    image : ndarray of shape (H, W), float32

    Returns
    -------
    ndarray of shape (passes, H, W), float32
    """
    img = np.asarray(image, np.float32)
    out = np.empty((passes, *img.shape), np.float32)
    if method == "tta":
        if not 1 <= passes <= len(DIHEDRAL):
            raise ValueError(f"passes={passes}: test-time augmentation has 1..8 passes")
        for t, (k, flip) in enumerate(DIHEDRAL[:passes]):
            a = np.rot90(img, k)
            a = a[:, ::-1] if flip else a
            h = predict_heatmap(model, np.ascontiguousarray(a), precision=precision)
            h = h[:, ::-1] if flip else h
            out[t] = np.rot90(h, -k)
        return out
    if method != "mc-dropout":
        raise ValueError(f"method={method!r}: use 'tta' or 'mc-dropout'")
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    if not drops:
        raise ValueError("mc-dropout needs a model trained with dropout > 0")
    dev = next(model.parameters()).device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for m in drops:
            m.train()
        try:
            for t in range(passes):
                out[t] = predict_heatmap(model, img, precision=precision)
        finally:
            for m in drops:
                m.eval()
    return out
