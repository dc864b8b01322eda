"""Label-free seed points from prior self-activation maps (PSM; Chen et al., MICCAI 2023).

A small CNN with one scalar output is trained self-supervised on the user's own images;
the Grad-CAM of that output at the shallowest stage is an activation map that lights up
where the image has structure (nuclei, cell bodies). The map is fused with the raw image,
``I_f = I_am + fusion_beta * I_raw`` (the paper's formula, on the scalar map and the
grayscale image turned so that cells are bright: see :func:`fuse`), K-means (K = 3) on
the fused pixels splits cells from background, the cell cluster is cleaned, and its
distance-transform peaks are the seed points, each with a confidence.

Everything here is pure: numpy / torch in, numpy out, no files, no Ray.

Choices that differ from the public code (cpystan/PSM), and why:

* the code fuses a JET colour-mapped map with the RGB image and clusters the three colour
  channels; here the map itself (a scalar per pixel) is fused with the grayscale image, as
  in the paper's formula: a colour map adds no information, only a non-linear recoding;
* the code trains on 0-255 inputs and computes maps on 0-1 inputs; here both use the same
  per-image percentile-normalised image;
* the code's default objective (L1 between the outputs for an image and its 180°
  rotation) is minimised by a constant output; :data:`OBJECTIVES` also has the code's
  margin variant with another tile as the negative (``contrastive``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage, signal
from skimage import morphology
from skimage.feature import peak_local_max
from torch import nn

from pseudocell.core.detector import resolve_device
from pseudocell.core.parallel import SINGLE, DataParallel

__all__ = ["OBJECTIVES", "POLARITIES", "ActivationNet", "ActivationTrainResult",
           "build_activation_net", "load_activation_net", "train_activation_net",
           "min_training_pixels", "activation_map", "stain_polarity", "fuse",
           "kmeans_clusters", "foreground", "component_diameter", "clean_mask", "seed_points",
           "background_points", "MIN_COMPONENT_AREA", "SOLIDITY"]

logger = logging.getLogger(__name__)

#: Self-supervised objectives of the activation network.
OBJECTIVES = ("contrastive", "invariance")
#: Which pixels are cells: ``bright`` (fluorescence), ``dark`` (H&E nuclei, stained
#: nuclei in bright-field), ``auto`` (from the skewness of the intensities).
POLARITIES = ("auto", "bright", "dark")
#: Connected components smaller than this (px) never count as cells when the cell size
#: is estimated from the foreground mask.
MIN_COMPONENT_AREA = 12
#: The activation network needs at least this many non-overlapping training tiles.
MIN_TILES = 16


class _Block(nn.Module):
    """conv-ReLU-conv with an identity skip, then ReLU (no normalisation: the output of
    a tile never depends on the other tiles of its batch)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(ch, ch, 3, padding=1)
        self.b = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class ActivationNet(nn.Module):
    """Fully convolutional net with one scalar output per image.

    stem (3x3 conv) → ``layer1`` (two residual blocks at full resolution: the shallowest
    stage, whose block outputs Grad-CAM reads) → two stride-2 stages → global average
    pool → linear → scalar. Input (B, 1, H, W) float32 of any H, W >= 4.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.layer1 = nn.ModuleList([_Block(width), _Block(width)])
        self.deep = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(), _Block(2 * width),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(),
            _Block(4 * width))
        self.head = nn.Linear(4 * width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the scalar outputs (B,) and the ``layer1`` block outputs."""
        h = self.stem(x)
        feats = []
        for block in self.layer1:
            h = block(h)
            feats.append(h)
        h = self.deep(h)
        return self.head(h.mean(dim=(2, 3))).squeeze(1), feats


def build_activation_net(width: int, seed: int) -> ActivationNet:
    """An :class:`ActivationNet` whose initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ActivationNet(width)


def load_activation_net(state_dict: dict, width: int, device: str = "cpu") -> ActivationNet:
    """Rebuild a trained net in eval mode."""
    net = ActivationNet(width)
    net.load_state_dict(state_dict)
    return net.to(resolve_device(device)).eval()


@dataclass(frozen=True)
class ActivationTrainResult:
    """``state_dict`` (CPU tensors) and the mean loss of every logging window."""

    state_dict: dict
    losses: list[float]


def min_training_pixels(crop: int) -> int:
    """Pixels the training images must hold at least: :data:`MIN_TILES` tiles of
    ``crop`` x ``crop`` (e.g. one 256 x 256 image for 64 px tiles)."""
    return MIN_TILES * crop * crop


def _crops(images: Sequence[np.ndarray], n: int, crop: int, rng: np.random.Generator,
           avoid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random ``crop`` x ``crop`` tiles (images drawn by area); with ``avoid`` (the
    image of each tile of another batch) a tile comes from another image when there is
    one. Returns (tiles (n, 1, crop, crop) float32, image index of each (n,))."""
    areas = np.array([im.shape[0] * im.shape[1] for im in images], float)
    which = rng.choice(len(images), size=n, p=areas / areas.sum())
    if avoid is not None and len(images) > 1:
        same = which == avoid
        which[same] = (avoid[same] + 1 + rng.integers(0, len(images) - 1, same.sum())) \
            % len(images)
    out = np.empty((n, 1, crop, crop), np.float32)
    for k, i in enumerate(which):
        im = images[i]
        y = int(rng.integers(0, im.shape[0] - crop + 1))
        x = int(rng.integers(0, im.shape[1] - crop + 1))
        out[k, 0] = im[y:y + crop, x:x + crop]
    return out, which


def train_activation_net(images: Sequence[np.ndarray], *, objective: str = "contrastive",
                         iters: int = 300, batch: int = 16, crop: int = 64, lr: float = 1e-3,
                         margin: float = 1.0, width: int = 16, seed: int = 0,
                         device: str = "cpu",
                         progress: Callable[[int, float], None] | None = None,
                         parallel: DataParallel = SINGLE,
                         log_every: int = 25) -> ActivationTrainResult:
    """Train the activation network self-supervised on random tiles.

    Parameters
    ----------
    images : sequence of ndarray (H, W) float32
        Normalised images (the same scaling :func:`activation_map` gets), each at least
        ``crop`` px on both sides.
    objective : {"contrastive", "invariance"}
        ``invariance``: mean |f(x) - f(rot180 x)| (the PSM code's default; a constant f
        is a minimum). ``contrastive``: mean max(0, |f(x) - f(rot180 x)| - |f(x) - f(x')|
        + margin), x' a tile of another image (the code's margin variant).
    iters, batch, crop, lr, margin, width, seed : training settings
    progress : callable(step, mean loss), optional
        Called every ``log_every`` steps and at the end.
    parallel : DataParallel
        Data-parallel worker settings (every worker draws the same batch, keeps its
        slice); the default is one process.

    Returns
    -------
    ActivationTrainResult
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES}")
    small = [im.shape for im in images if min(im.shape) < crop]
    if not images or small:
        raise ValueError(f"every image must be at least crop={crop} px on both sides "
                         f"(got {small or 'no image'})")
    dev = resolve_device(device)
    rng = np.random.default_rng(seed)
    base = build_activation_net(width, seed).to(dev)
    model = parallel.prepare(base)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    mine = parallel.shard(np.arange(batch))
    losses: list[float] = []
    window: list[float] = []
    for step in range(1, iters + 1):
        xa, which = _crops(images, batch, crop, rng)
        xn, _ = _crops(images, batch, crop, rng, avoid=which)
        x = torch.from_numpy(xa[mine]).to(dev)
        fa, _ = model(x)
        fr, _ = model(torch.flip(x, dims=(2, 3)))  # 180° rotation
        d_pos = (fa - fr).abs()
        if objective == "invariance":
            loss = d_pos.mean()
        else:
            fn, _ = model(torch.from_numpy(xn[mine]).to(dev))
            loss = torch.relu(d_pos - (fa - fn).abs() + margin).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(float(loss.detach()))
        if step % log_every == 0 or step == iters:
            losses.append(float(np.mean(window)))
            window = []
            if progress is not None:
                progress(step, losses[-1])
    state = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
    return ActivationTrainResult(state_dict=state, losses=losses)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(a, np.float32)


def activation_map(net: ActivationNet, image: np.ndarray) -> np.ndarray:
    """Grad-CAM of the scalar output at the shallowest stage.

    For every ``layer1`` block output A (C, H, W): weights w_c = mean over pixels of
    d|out| / d A_c (the output's magnitude: its sign is arbitrary, as every objective is
    symmetric in it), map = ReLU(sum_c w_c A_c), min-max scaled to [0, 1]; the per-block maps
    are averaged and scaled again.

    Parameters
    ----------
    net : ActivationNet (eval mode)
    image : ndarray (H, W) float32, normalised as in training

    Returns
    -------
    ndarray (H, W) float32 in [0, 1] (all zeros when the gradient vanishes)
    """
    dev = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None].to(dev)
    with torch.enable_grad():
        out, feats = net(x)
        for f in feats:
            f.retain_grad()
        out.abs().sum().backward()
    maps = []
    for f in feats:
        w = f.grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((w * f).sum(dim=1))[0].detach().cpu().numpy()
        maps.append(_minmax(cam))
    net.zero_grad(set_to_none=True)
    return _minmax(np.mean(maps, axis=0))


def _solid_share(mask: np.ndarray) -> float:
    """Share of the area of ``mask``'s components (of at least
    :data:`MIN_COMPONENT_AREA` px) that lies in blob-like ones: convex-ish (solidity >=
    :data:`SOLIDITY`) and at most :data:`MAX_OBJECT_SHARE` of the image (a background
    sheet around small holes is convex-ish too, but huge)."""
    from skimage.measure import regionprops

    lab, _ = ndimage.label(mask)
    props = [p for p in regionprops(lab) if p.area >= MIN_COMPONENT_AREA]
    total = sum(p.area for p in props)
    big = MAX_OBJECT_SHARE * mask.size
    blobs = sum(p.area for p in props if p.area <= big and p.solidity >= SOLIDITY)
    return blobs / total if total else 0.0


#: Solidity (area / convex hull area) above which a component counts as blob-like.
SOLIDITY = 0.85
#: A blob-like object covers at most this share of its image.
MAX_OBJECT_SHARE = 0.05


def stain_polarity(images: Sequence[np.ndarray], *, k: int = 3, seed: int = 0) -> str:
    """Whether cells are the ``bright`` or the ``dark`` pixels: the polarity whose
    extreme K-means cluster (of the raw intensities, per image) has more of its area in
    blob-like objects (convex-ish components, solidity >= :data:`SOLIDITY`), averaged
    over the images. Cells and nuclei are blobs; the other extreme (the background of
    fluorescence, the lumens and glass of H&E) is a few large irregular regions. On the
    first 6 training images of the shared sets (blob share, bright / dark): MoNuSeg H&E
    0.06 / 0.27 (dark), U2OS 0.31 / 0.00 and NIH3T3 0.84 / 0.00 (bright Hoechst nuclei),
    bright-field 0.16 / 0.00 (the bright cell interior).

    >>> rng = np.random.default_rng(0)
    >>> im = rng.normal(0.1, 0.02, (96, 96)); im[60:90, 5:90] = 0.5
    >>> for y in range(8, 50, 12):
    ...     for x in range(8, 90, 12): im[y:y + 6, x:x + 6] = 0.9
    >>> stain_polarity([im]), stain_polarity([1 - im])
    ('bright', 'dark')
    """
    score = {"bright": 0.0, "dark": 0.0}
    for j, im in enumerate(images):
        cl = kmeans_clusters(np.clip(im, 0.0, 1.0).astype(np.float32), k, seed=seed + j)
        score["bright"] += _solid_share(cl == k - 1)
        score["dark"] += _solid_share(cl == 0)
    return "bright" if score["bright"] >= score["dark"] else "dark"


def fuse(amap: np.ndarray, image: np.ndarray, fusion_beta: float, polarity: str) -> np.ndarray:
    """``I_f = I_am + fusion_beta * I_raw`` with I_raw the image clipped to [0, 1] and
    turned so that cells are bright (``1 - image`` for ``dark`` cells), and I_am the map
    turned the same way: a Grad-CAM map has no sign of its own (it may light up the
    cells or what surrounds them), so it is used as ``1 - amap`` when it correlates
    negatively with I_raw.

    Parameters
    ----------
    amap : ndarray (H, W) float32 in [0, 1]
    image : ndarray (H, W) float32, normalised to about [0, 1]
    fusion_beta : float >= 0
    polarity : {"bright", "dark"}

    Returns
    -------
    ndarray (H, W) float32 in [0, 1 + fusion_beta]
    """
    if polarity not in ("bright", "dark"):
        raise ValueError(f"polarity={polarity!r}: resolve 'auto' with stain_polarity first")
    raw = np.clip(image, 0.0, 1.0).astype(np.float32)
    if polarity == "dark":
        raw = 1.0 - raw
    a = amap.astype(np.float32)
    if a.std() > 0 and raw.std() > 0 and np.corrcoef(a.ravel(), raw.ravel())[0, 1] < 0:
        a = 1.0 - a
    return (a + fusion_beta * raw).astype(np.float32)


def foreground(clusters: np.ndarray, k: int) -> np.ndarray:
    """The cell pixels of a K-means labelling (:func:`kmeans_clusters`): the top
    cluster, joined by the next ones down as long as the union stays as blob-like
    (share of its area in convex-ish objects at least 0.9 x the top cluster's). On dim
    and bright nuclei of one image (fluorescence) that takes both levels; where the next
    level is tissue or haze around the cells (H&E stroma) it stays with the top one.

    Parameters
    ----------
    clusters : ndarray (H, W) uint8 in [0, k - 1]

    Returns
    -------
    ndarray (H, W) bool
    """
    mask = clusters == k - 1
    ref = _solid_share(mask)
    for j in range(k - 2, 0, -1):
        wider = clusters >= j
        if _solid_share(wider) < 0.9 * ref:
            break
        mask = wider
    return mask


def kmeans_clusters(fused: np.ndarray, k: int = 3, *, seed: int = 0,
                    max_pixels: int = 50_000) -> np.ndarray:
    """K-means of the fused pixel values, clusters numbered by their centre (0: lowest,
    ``k - 1``: the cell cluster, as cells are bright in the fused image).

    The centres are fitted on a seeded subsample of ``max_pixels`` pixels (k-means++ and
    Lloyd, 4 starts); every pixel then goes to its nearest centre.

    Parameters
    ----------
    fused : ndarray (H, W) float32
    k : int >= 2

    Returns
    -------
    ndarray (H, W) uint8 in [0, k - 1]
    """
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    flat = fused.reshape(-1).astype(np.float64)
    sample = flat[rng.choice(flat.size, min(max_pixels, flat.size), replace=False)]
    n_distinct = len(np.unique(sample))
    if n_distinct < k:
        raise ValueError(f"the fused image has {n_distinct} distinct value(s); K-means needs "
                         f"at least k={k}")
    km = KMeans(n_clusters=k, n_init=4, random_state=int(seed) % (2**31)).fit(sample[:, None])
    centres = np.sort(km.cluster_centers_[:, 0])
    cuts = (centres[1:] + centres[:-1]) / 2
    return np.digitize(fused, cuts).astype(np.uint8)


def component_diameter(mask: np.ndarray) -> float | None:
    """Equivalent-circle diameter (px) of the typical object of ``mask``: the
    area-weighted median of the areas of its connected components of at least
    :data:`MIN_COMPONENT_AREA` px (the size of the object a foreground pixel belongs to,
    so that specks and fragments do not pull it down); None when there is none.

    >>> m = np.zeros((50, 50), bool); m[5:15, 5:15] = m[30:40, 30:40] = True
    >>> m[45, 45] = m[2, 40:45] = True  # specks are ignored
    >>> round(component_diameter(m), 2)
    11.28
    """
    lab, n = ndimage.label(mask)
    if n == 0:
        return None
    areas = np.bincount(lab.ravel())[1:]
    areas = np.sort(areas[areas >= MIN_COMPONENT_AREA])
    if not len(areas):
        return None
    cum = np.cumsum(areas)
    median = areas[np.searchsorted(cum, cum[-1] / 2)]
    return float(2.0 * np.sqrt(median / np.pi))


def clean_mask(mask: np.ndarray, diameter: float) -> np.ndarray:
    """Drop objects smaller than a quarter-diameter disc and fill holes smaller than a
    half-diameter disc. ``mask`` (H, W) bool → (H, W) bool."""
    small = max(1, int(np.pi * (diameter / 8) ** 2))
    hole = max(1, int(np.pi * (diameter / 4) ** 2))
    out = morphology.remove_small_objects(mask.astype(bool), max_size=small)
    return morphology.remove_small_holes(out, max_size=hole)


def _disc(radius: float) -> np.ndarray:
    r = max(1, int(np.ceil(radius)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    d = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float32)
    return d / d.sum()


def seed_points(mask: np.ndarray, diameter: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres in a foreground mask and the confidence of each.

    Centres are the peaks (at least ``0.3 * diameter`` apart, the paper's 6 px for its
    ~20 px nuclei) of the distance transform smoothed with sigma ``diameter / 8``, at
    least ``diameter / 8`` px inside the mask. Confidence = fill x size, both in [0, 1]:
    *fill* is the share of a disc of the cell diameter at the point that is foreground;
    *size* is min(a, 1/a) with a = (area of the point's component / its number of
    points) / (area of a cell-diameter disc) — a compact blob of one cell's size scores
    1, fragments and clumps less.

    Parameters
    ----------
    mask : ndarray (H, W) bool
    diameter : float, px

    Returns
    -------
    points : ndarray (N, 2) float64 (y, x)
    confidence : ndarray (N,) float64 in [0, 1]
    """
    if not mask.any():
        return np.zeros((0, 2)), np.zeros(0)
    dist = ndimage.gaussian_filter(ndimage.distance_transform_edt(mask), diameter / 8)
    pts = peak_local_max(dist, min_distance=max(1, int(round(0.3 * diameter))),
                         threshold_abs=diameter / 8, labels=mask.astype(np.int32),
                         exclude_border=False)
    if not len(pts):
        return np.zeros((0, 2)), np.zeros(0)
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    fill = signal.fftconvolve(mask.astype(np.float32), _disc(diameter / 2), mode="same")
    fill = np.clip(fill[pts[:, 0], pts[:, 1]], 0.0, 1.0)
    lab, _ = ndimage.label(mask)
    comp = lab[pts[:, 0], pts[:, 1]]
    areas = np.bincount(lab.ravel())
    per_point = areas[comp] / np.bincount(comp, minlength=len(areas))[comp]
    a = per_point / (np.pi * diameter ** 2 / 4)
    size = np.minimum(a, 1.0 / a)
    return pts.astype(np.float64), (fill * size).astype(np.float64)


def background_points(mask: np.ndarray, diameter: float) -> np.ndarray:
    """Grid points (spacing one diameter) at least one diameter away from every
    foreground pixel: (N, 2) float64 (y, x), row-major order."""
    if mask.all():
        return np.zeros((0, 2))
    far = ndimage.distance_transform_edt(~mask) >= diameter
    step = max(1, int(round(diameter)))
    off = step // 2
    ys, xs = np.mgrid[off:mask.shape[0]:step, off:mask.shape[1]:step]
    keep = far[ys, xs]
    return np.stack([ys[keep], xs[keep]], axis=1).astype(np.float64)
