"""P-classification linear ranker (Ertekin & Rudin 2011), as used by Fujii et al. 2021.

Loss of a linear score f(x) = w·z(x) + b on standardised features z:

    L(w, b) = sum_P exp(-f) + (1/p) sum_U exp(p f) + lam ||w||^2

Large ``p`` concentrates the push on the highest-scoring unlabeled samples, so the
unlabeled samples that still rank high are the most positive-like.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

__all__ = ["pclass_loss", "LinearRanker", "fit_ranker"]

_EXP_MAX = 700.0  # exp(709) overflows float64


def _exp(z: np.ndarray) -> np.ndarray:
    return np.exp(np.minimum(z, _EXP_MAX))


def pclass_loss(w: np.ndarray, b: float, z_pos: np.ndarray, z_unl: np.ndarray, p: float,
                lam: float) -> tuple[float, np.ndarray, float]:
    """Value and gradient of the P-classification loss.

    Parameters
    ----------
    w : ndarray (d,), float64
    b : float
    z_pos : ndarray (n_p, d), float64, features of the positive class
    z_unl : ndarray (n_u, d), float64, features of the unlabeled class
    p : float > 0
    lam : float >= 0

    Returns
    -------
    value : float
    grad_w : ndarray (d,), float64
    grad_b : float

    >>> v, gw, gb = pclass_loss(np.zeros(1), 0.0, np.ones((2, 1)), np.ones((3, 1)), 4.0, 0.0)
    >>> v, gw.tolist(), gb
    (2.75, [1.0], 1.0)
    """
    fp = z_pos @ w + b
    fu = z_unl @ w + b
    ep = _exp(-fp)
    eu = _exp(p * fu)
    value = float(ep.sum() + eu.sum() / p + lam * float(w @ w))
    grad_w = -(ep @ z_pos) + eu @ z_unl + 2.0 * lam * w
    grad_b = float(-ep.sum() + eu.sum())
    return value, grad_w, grad_b


@dataclass(frozen=True)
class LinearRanker:
    """A fitted ranker: score(x) = w · (x - mean) / std + b."""

    w: np.ndarray
    b: float
    mean: np.ndarray
    std: np.ndarray
    converged: bool

    def score(self, x: np.ndarray) -> np.ndarray:
        """(n, d) features → (n,) float64 scores; higher = more like the positive class."""
        with threadpool_limits(limits=1, user_api="blas"):  # see fit_ranker
            return ((np.asarray(x, np.float64) - self.mean) / self.std) @ self.w + self.b


def fit_ranker(x_pos: np.ndarray, x_unl: np.ndarray, *, p: float = 4.0, lam: float = 0.1,
               max_iter: int = 1000) -> LinearRanker:
    """Minimise the P-classification loss with L-BFGS from w = 0, b = 0 (deterministic).

    Features are standardised with the mean/std of ``x_pos`` and ``x_unl`` together.
    BLAS runs on one thread: the result is then the same bytes whatever the process's
    thread settings (a Ray worker has one BLAS thread, a local process as many as cores),
    and for these (n, 128) products it is also ~10x faster than threaded BLAS (measured:
    24 s → 2 s for the demo's rank stage on 2 cores).

    Parameters
    ----------
    x_pos : ndarray (n_p, d), positive class
    x_unl : ndarray (n_u, d), unlabeled class
    """
    x_pos = np.asarray(x_pos, np.float64)
    x_unl = np.asarray(x_unl, np.float64)
    if len(x_pos) == 0 or len(x_unl) == 0:
        raise ValueError(f"ranker needs both classes, got n_pos={len(x_pos)} n_unl={len(x_unl)}")
    both = np.concatenate([x_pos, x_unl])
    mean = both.mean(axis=0)
    std = both.std(axis=0)
    std[std < 1e-12] = 1.0
    zp, zu = (x_pos - mean) / std, (x_unl - mean) / std
    d = zp.shape[1]

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v, gw, gb = pclass_loss(theta[:d], float(theta[d]), zp, zu, p, lam)
        return v, np.append(gw, gb)

    with threadpool_limits(limits=1, user_api="blas"):
        res = minimize(fun, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter})
    return LinearRanker(res.x[:d].copy(), float(res.x[d]), mean, std, bool(res.success))
