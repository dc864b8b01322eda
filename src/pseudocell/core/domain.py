"""Domain-adaptation baselines: input-level augmentation and DANN gradient reversal.

Both change only how the source detector is trained (see
:func:`pseudocell.core.detector.train_detector`):

* :func:`augment_intensity` jitters every training crop's intensity response (gain,
  offset, gamma, blur, noise) so that the detector does not learn one microscope's
  brightness and contrast (flips and rotations are always on);
* :class:`DomainHead` behind :func:`grad_reverse` is the domain classifier of DANN
  (Ganin & Lempitsky 2015): it learns to tell source crops from target crops from the
  U-Net's features at a chosen level while the reversed gradient pushes those features
  to be indistinguishable; its weight follows :func:`ganin_lambda`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import nn

__all__ = ["augment_intensity", "GradReverse", "grad_reverse", "ganin_lambda", "DomainHead"]


def augment_intensity(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random intensity response of each crop of ``batch``.

    Per crop, in this order: min-max to [0, 1], gamma in [0.5, 2] (log-uniform), gain in
    [0.6, 1.4] and offset in [-0.2, 0.2], Gaussian blur (sigma in [0, 1.5] px, half the
    crops), Gaussian noise (sd in [0, 0.05]), then back to zero mean and unit variance
    like :func:`pseudocell.data.images.normalize`.

    Parameters
    ----------
    batch : ndarray of shape (B, 1, H, W), float32
    rng : numpy Generator

    Returns
    -------
    ndarray of shape (B, 1, H, W), float32
    """
    out = np.empty_like(batch, dtype=np.float32)
    for b in range(len(batch)):
        a = batch[b, 0].astype(np.float64)
        lo, hi = a.min(), a.max()
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        a = a ** math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        a = a * rng.uniform(0.6, 1.4) + rng.uniform(-0.2, 0.2)
        if rng.random() < 0.5:
            a = ndimage.gaussian_filter(a, rng.uniform(0.0, 1.5))
        a = a + rng.normal(0.0, rng.uniform(0.0, 0.05), a.shape)
        sd = a.std()
        out[b, 0] = (a - a.mean()) / sd if sd > 0 else 0.0
    return out


class GradReverse(torch.autograd.Function):
    """Identity forward; the gradient times ``-lam`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:  # noqa: D102
        ctx.lam = float(lam)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Gradient-reversal layer: ``x`` forward, ``-lam * grad`` backward.

    >>> x = torch.ones(2, requires_grad=True)
    >>> grad_reverse(x, 0.5).sum().backward()
    >>> x.grad.tolist()
    [-0.5, -0.5]
    """
    return GradReverse.apply(x, lam)


def ganin_lambda(progress: float, scale: float = 1.0) -> float:
    """DANN's weight schedule ``scale * (2 / (1 + exp(-10 p)) - 1)`` at training progress
    ``p`` in [0, 1]: 0 at the start, ``scale * 0.99991`` at the end.

    >>> ganin_lambda(0.0), round(ganin_lambda(1.0, 2.0), 4)
    (0.0, 1.9998)
    """
    p = min(max(float(progress), 0.0), 1.0)
    return scale * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)


class DomainHead(nn.Module):
    """Domain classifier on U-Net features: conv 3x3 → ReLU → global average → linear.

    Maps features (B, C, h, w) to one logit per crop (B,): > 0 says "target".
    """

    def __init__(self, channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(feats).mean(dim=(2, 3)))[:, 0]
