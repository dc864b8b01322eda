"""Non-negative PU learning (Kiryo et al., NeurIPS 2017) and the small PU CNN.

The CNN's penultimate activations are the features the P-classification ranker uses.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from pseudocell.core.detector import resolve_device
from pseudocell.core.parallel import SINGLE, DataParallel

__all__ = ["NNPURisk", "nnpu_risk", "PUNet", "train_pu", "pu_features", "iter_pu_features",
           "default_prior", "estimate_prior_elkan_noto", "PUTrainResult"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NNPURisk:
    """One evaluation of the nnPU risk.

    Attributes
    ----------
    objective : torch.Tensor, scalar
        What to back-propagate. Equals ``risk`` unless ``corrected``; then it is
        ``-gamma * negative_risk``, the nnPU correction step that pushes the negative
        risk back up to >= -beta (Kiryo et al., Algorithm 1).
    risk : torch.Tensor, scalar
        The nnPU risk  pi * R_p^+ + max(0, R_u^- - pi * R_p^-)  (for reporting).
    positive_risk : torch.Tensor, scalar  (pi * R_p^+)
    negative_risk : torch.Tensor, scalar  (R_u^- - pi * R_p^-, may be < 0)
    corrected : bool
        True when ``negative_risk < -beta``.
    """

    objective: torch.Tensor
    risk: torch.Tensor
    positive_risk: torch.Tensor
    negative_risk: torch.Tensor
    corrected: bool


def nnpu_risk(out_p: torch.Tensor, out_u: torch.Tensor, prior: float, *, beta: float = 0.0,
              gamma: float = 1.0) -> NNPURisk:
    """nnPU risk with the sigmoid loss  l(z, t) = sigmoid(-t z).

    Parameters
    ----------
    out_p : Tensor of shape (n_p,), classifier scores of labeled positives
    out_u : Tensor of shape (n_u,), classifier scores of unlabeled samples
    prior : float in (0, 1), class prior pi of positives in the unlabeled data
    beta : float >= 0, tolerance of the non-negativity check
    gamma : float in (0, 1], step discount of the correction step

    >>> r = nnpu_risk(torch.tensor([0.0]), torch.tensor([0.0]), 0.4)
    >>> round(float(r.risk), 6), r.corrected
    (0.5, False)
    """
    r_p_plus = torch.sigmoid(-out_p).mean()
    r_p_minus = torch.sigmoid(out_p).mean()
    r_u_minus = torch.sigmoid(out_u).mean()
    positive = prior * r_p_plus
    negative = r_u_minus - prior * r_p_minus
    corrected = bool(negative.detach() < -beta)
    risk = positive + torch.clamp(negative, min=0.0)
    objective = -gamma * negative if corrected else positive + negative
    return NNPURisk(objective, risk, positive, negative, corrected)


def estimate_prior_elkan_noto(x_p: np.ndarray, x_u: np.ndarray, seed: int) -> float:
    """Class prior of positives in U (Elkan & Noto 2008).

    A probabilistic labeled-vs-unlabeled classifier g (out-of-fold predictions) gives
    c = E[g | P], the chance that a positive is labeled; each unlabeled x is positive with
    probability w(x) = (1 - c)/c · g/(1 - g), and pi = mean_U w, clipped to [0.05, 0.95].
    With fewer than 3 patches in P or in U (3 folds need one of each in every training
    part) it is :func:`default_prior`.
    """
    if min(len(x_p), len(x_u)) < 3:
        return default_prior(len(x_p), len(x_u))
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    X = np.concatenate([x_p.reshape(len(x_p), -1), x_u.reshape(len(x_u), -1)])
    y = np.r_[np.ones(len(x_p)), np.zeros(len(x_u))]
    # one BLAS/OpenMP thread: the same bytes in a local run (as many BLAS threads as
    # cores) and in a Ray actor (one); with both, the demo's prior differed in the 4th
    # digit (0.48741 against 0.48772) and so did every later stage
    with threadpool_limits(limits=1):
        g = cross_val_predict(LogisticRegression(max_iter=2000, C=0.1), X, y, cv=3,
                              method="predict_proba")[:, 1]
    c = float(np.clip(g[: len(x_p)].mean(), 1e-6, 1 - 1e-6))
    gu = np.clip(g[len(x_p):], 0.0, 1 - 1e-6)
    w = (1 - c) / c * gu / (1 - gu)
    return float(np.clip(np.minimum(w, 1.0).mean(), 0.05, 0.95))


def default_prior(n_p: int, n_u: int) -> float:
    """The reference prior (#P + 0.5 #U) / (#P + #U).

    >>> default_prior(10, 90)
    0.55
    """
    return (n_p + 0.5 * n_u) / (n_p + n_u)


class PUNet(nn.Module):
    """Small CNN for (B, C, S, S) patches; ``features`` is the penultimate layer.

    Three conv-BN-ReLU blocks (``widths``), a 3x3 pooled map, a ``feature_dim`` layer
    and a linear score. Narrower than the reference's AlexNet-like net (2304-d
    features) so that a round's PU training takes about a minute on two CPU cores.

    >>> net = PUNet(in_channels=1, feature_dim=8)
    >>> x = torch.zeros(3, 1, 27, 27)
    >>> tuple(net(x).shape), tuple(net.features(x).shape)
    ((3,), (3, 8))
    """

    def __init__(self, in_channels: int = 1, feature_dim: int = 128,
                 widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        w1, w2, w3 = widths

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *conv(in_channels, w1), nn.MaxPool2d(2),
            *conv(w1, w2), nn.MaxPool2d(2),
            *conv(w2, w3), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
            nn.Linear(w3 * 9, feature_dim), nn.ReLU(inplace=True),
        )
        self.last = nn.Linear(feature_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) → (B, feature_dim): the network without its last layer."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.body(x))[:, 0]


@dataclass
class PUTrainResult:
    """Trained weights (CPU), the prior used, and per-epoch mean risk / correction count."""

    state_dict: dict
    prior: float
    risks: list[float]
    corrections: list[int]


def train_pu(
    patches_p: np.ndarray,
    patches_u: np.ndarray,
    *,
    prior: float | None,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch: int,
    feature_dim: int,
    seed: int,
    device: str = "auto",
    progress: Callable[[int, float], None] | None = None,
    parallel: DataParallel = SINGLE,
) -> PUTrainResult:
    """Train :class:`PUNet` with the nnPU risk.

    Parameters
    ----------
    patches_p : ndarray (n_p, C, S, S), float32, patches at labeled positives
    patches_u : ndarray (n_u, C, S, S), float32, patches at unlabeled detections
        Or anything with ``shape`` and ``len`` that returns those rows as an ndarray
        when indexed by an int array or a slice (e.g. rows of a scratch file read as
        each batch needs them: the stage streams them).
    prior : float or None
        None uses :func:`default_prior`.
    epochs, lr, weight_decay, batch, feature_dim : Adam and network settings; each
        batch holds P and U in their overall proportion (at least one of each).
    seed : int
    parallel : DataParallel
        Data-parallel worker settings: each worker takes its slice of every batch and
        evaluates the nnPU risk (and its correction) on that slice. Only
        ``world_size == 1`` reproduces the single-process result exactly.

    Returns
    -------
    PUTrainResult
    """
    n_p, n_u = len(patches_p), len(patches_u)
    if n_p == 0 or n_u == 0:
        raise ValueError(f"PU training needs both sets non-empty, got n_p={n_p} n_u={n_u}")
    prior = default_prior(n_p, n_u) if prior is None else float(prior)
    dev = resolve_device(device)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = PUNet(patches_p.shape[1], feature_dim).to(dev)
    model = parallel.prepare(base)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_batches = max(1, int(np.ceil((n_p + n_u) / batch)))
    risks: list[float] = []
    corrections: list[int] = []
    model.train()
    for epoch in range(1, epochs + 1):
        # every sample is used once per epoch; with few positives, fewer (larger) batches
        k = min(n_batches, n_p, n_u)
        pp = np.array_split(rng.permutation(n_p), k)
        uu = np.array_split(rng.permutation(n_u), k)
        tot, n_corr = 0.0, 0
        for ip, iu in zip(pp, uu):
            # a worker whose slice of a tiny batch is empty uses the whole batch
            ip, iu = (s if len(s := parallel.shard(a)) else a for a in (ip, iu))
            out = model(_tensor(patches_p[ip], patches_u[iu], dev))
            r = nnpu_risk(out[: len(ip)], out[len(ip):], prior)
            opt.zero_grad(set_to_none=True)
            r.objective.backward()
            opt.step()
            tot += float(r.risk.detach())
            n_corr += int(r.corrected)
        risks.append(tot / k)
        corrections.append(n_corr)
        if progress is not None:
            progress(epoch, risks[-1])
        logger.debug("pu epoch=%d risk=%.5f corrected=%d/%d", epoch, risks[-1], n_corr, k)
    _recalibrate_batchnorm(base, _in_order(patches_p, patches_u, batch, dev))
    state = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
    return PUTrainResult(state, prior, risks, corrections)


def _tensor(a: np.ndarray, b: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Rows ``a`` then rows ``b`` as one float32 tensor on ``dev``."""
    x = np.concatenate([np.asarray(a, np.float32), np.asarray(b, np.float32)])
    return torch.from_numpy(np.ascontiguousarray(x)).to(dev)


def _in_order(xp, xu, batch: int, dev: torch.device):
    """Batches of ``batch`` consecutive rows of P followed by U, read as they are used."""
    n_p = len(xp)
    for i in range(0, n_p + len(xu), batch):
        j = i + batch
        yield _tensor(xp[i:min(j, n_p)], xu[max(i - n_p, 0):max(j - n_p, 0)], dev)


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, batches) -> None:
    """Replace BatchNorm running statistics by exact averages over ``batches`` (an
    iterable of (B, C, S, S) tensors covering the training patches once).

    After few optimiser steps the exponential running averages are far from the data's
    statistics and eval-mode scores are biased; one pass with cumulative averaging
    (momentum=None) makes eval mode match the trained network.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in batches:
        model(x)
    for m in bns:
        m.momentum = 0.1
    model.eval()


@torch.no_grad()
def iter_pu_features(state_dict: dict, patches, *, feature_dim: int, device: str = "auto",
                     batch: int = 2048):
    """Features and PU scores of ``patches`` (ndarray (n, C, S, S) float32, or rows read
    on demand, see :func:`train_pu`), ``batch`` rows at a time, in order: yields
    ``(features (m, feature_dim) float32, scores (m,) float32)`` per batch, so the
    caller can write each block and hold none."""
    dev = resolve_device(device)
    model = PUNet(patches.shape[1], feature_dim)
    model.load_state_dict(state_dict)
    model.to(dev).eval()
    for i in range(0, len(patches), batch):
        x = torch.from_numpy(np.ascontiguousarray(patches[i:i + batch], dtype=np.float32)).to(dev)
        f = model.features(x)
        yield (f.cpu().numpy().astype(np.float32),
               model.last(f)[:, 0].cpu().numpy().astype(np.float32))


def pu_features(state_dict: dict, patches: np.ndarray, *, feature_dim: int,
                device: str = "auto", batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate-layer features and PU scores of ``patches`` (all at once; see
    :func:`iter_pu_features`).

    Returns
    -------
    features : ndarray (n, feature_dim), float32
    scores : ndarray (n,), float32 (the PU classifier's output; > 0 means positive)
    """
    blocks = list(iter_pu_features(state_dict, patches, feature_dim=feature_dim,
                                   device=device, batch=batch))
    if not blocks:
        return np.zeros((0, feature_dim), np.float32), np.zeros(0, np.float32)
    return (np.concatenate([f for f, _ in blocks]), np.concatenate([s for _, s in blocks]))
