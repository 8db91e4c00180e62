"""Fitting L(N, D) = E + A / N^α + B / D^β to a ladder of runs (Chinchilla approach 3).

As in Hoffmann et al. (2022, appendix D.2) and the Epoch AI replication
(Besiroglu et al. 2024): with A = e^a, B = e^b, E = e^e the model's log loss is
LSE(a − α log N, b − β log D, e); the Huber loss (δ = 1e-3) of its residual
against the observed log loss is minimized by L-BFGS from a grid of starting
values, and the best optimum is kept. Both papers start L-BFGS from every grid
point; here the objective is evaluated on the whole grid at once and L-BFGS
starts from the ``starts`` best points (default 16 of Chinchilla's 5,400),
which finds the same optimum for a fraction of the time. Bootstrap refits on
resampled runs give the intervals.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from lmforge.errors import LmforgeError

# Chinchilla's grid of initializations (appendix D.2), for (alpha, beta, e, a, b).
DEFAULT_GRID = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}


@dataclass
class ScalingLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float = float("nan")
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def predict(self, n_params, tokens):
        """Predicted loss at N parameters and D tokens (scalars or arrays)."""
        n_params, tokens = np.asarray(n_params, dtype=float), np.asarray(tokens, dtype=float)
        return self.E + self.A / n_params**self.alpha + self.B / tokens**self.beta

    def compute_optimal(self, flops: float) -> tuple[float, float]:
        """(N, D) minimizing the predicted loss under C = 6·N·D (Chinchilla eq. 4)."""
        a, b = self.alpha, self.beta
        if a <= 0 or b <= 0:
            raise LmforgeError("the fitted exponents are not positive; the ladder does not show diminishing returns to fit")
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        n = g * (flops / 6) ** (b / (a + b))
        return n, flops / (6 * n)

    def to_dict(self) -> dict:
        return asdict(self)


def huber(residual: np.ndarray, delta: float) -> np.ndarray:
    absolute = np.abs(residual)
    return np.where(absolute <= delta, 0.5 * residual**2, delta * (absolute - 0.5 * delta))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float):
    """Summed Huber loss of the log-loss residuals and its gradient in (alpha, beta, e, a, b)."""
    alpha, beta, e, a, b = theta
    model_n, model_d = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(model_n, model_d), e)
    exp_n, exp_d, exp_e = np.exp(model_n - top), np.exp(model_d - top), np.exp(e - top)
    total = exp_n + exp_d + exp_e
    residual = top + np.log(total) - log_loss
    slope = np.clip(residual, -delta, delta) / total  # Huber derivative times d LSE / d term (softmax)
    grad_n, grad_d = slope * exp_n, slope * exp_d
    grad = np.array([-grad_n @ log_n, -grad_d @ log_d, np.sum(slope * exp_e), grad_n.sum(), grad_d.sum()])
    return float(np.sum(huber(residual, delta))), grad


def best_grid_points(grid: dict[str, tuple[float, ...]], log_n, log_d, log_loss, delta: float, count: int) -> np.ndarray:
    """The ``count`` grid points of lowest objective (the whole grid evaluated in one vectorized pass)."""
    points = np.array(list(itertools.product(*(grid[k] for k in ("alpha", "beta", "e", "a", "b")))))
    alpha, beta, e, a, b = (points[:, i:i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(points), len(log_n)))])
    values = huber(logsumexp(terms, axis=0) - log_loss, delta).sum(axis=1)
    return points[np.argsort(values, kind="stable")[:count]]


def _fit_from(starts, log_n, log_d, log_loss, delta) -> tuple[np.ndarray | None, float]:
    """Best L-BFGS optimum over the starting points, in the (alpha, beta, e, a, b) parametrization.

    The optimizer works on log N and log D centred on their means (a' = a − α·mean log N): a and α are
    otherwise almost collinear and L-BFGS creeps; the optimum is the same, reached in far fewer steps.
    """
    center_n, center_d = log_n.mean(), log_d.mean()
    shift = np.array([0.0, 0.0, 0.0, center_n, center_d])
    best, best_value = None, math.inf
    for start in np.asarray(starts, dtype=float):
        centred = start - shift * np.array([0, 0, 0, start[0], start[1]])
        result = minimize(_objective, centred, args=(log_n - center_n, log_d - center_d, log_loss, delta),
                          jac=True, method="L-BFGS-B", options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 5000})
        if np.all(np.isfinite(result.x)) and result.fun < best_value:
            theta = result.x.copy()
            theta[3] += theta[0] * center_n
            theta[4] += theta[1] * center_d
            best, best_value = theta, float(result.fun)
    return best, best_value


def _as_law(theta: np.ndarray, value: float) -> ScalingLaw:
    alpha, beta, e, a, b = theta
    return ScalingLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta), objective=value)


def fit_scaling_law(
    n_params,
    tokens,
    losses,
    *,
    delta: float = 1e-3,
    grid: dict[str, tuple[float, ...]] | None = None,
    starts: int = 16,
    bootstrap: int = 0,
    seed: int = 0,
    confidence: float = 0.8,
) -> ScalingLaw:
    """Fit E + A/N^α + B/D^β to runs (N parameters, D tokens, final loss); optional bootstrap intervals."""
    n, d, loss = (np.asarray(x, dtype=float) for x in (n_params, tokens, losses))
    if not (len(n) == len(d) == len(loss)):
        raise LmforgeError("n_params, tokens and losses must have one value per run")
    if len(n) < 5:
        raise LmforgeError(f"{len(n)} runs cannot determine 5 parameters; run a ladder of at least 5 (N, D) points")
    if np.any(n <= 0) or np.any(d <= 0) or np.any(loss <= 0):
        raise LmforgeError("parameters, tokens and losses must all be positive")
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 2:
        raise LmforgeError("the ladder needs at least two model sizes and two token budgets to separate A/N^α from B/D^β")
    log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
    theta, value = _fit_from(best_grid_points(grid or DEFAULT_GRID, log_n, log_d, log_loss, delta, starts),
                             log_n, log_d, log_loss, delta)
    law = _as_law(theta, value)
    if bootstrap:
        rng = np.random.default_rng(seed)
        # Refits start from the full-data optimum: resamples move it, they rarely jump basins.
        local = [theta]
        samples = []
        for _ in range(bootstrap):
            pick = rng.integers(0, len(n), len(n))
            if len(np.unique(n[pick])) < 2 or len(np.unique(d[pick])) < 2:
                continue
            refit, refit_value = _fit_from(local, log_n[pick], log_d[pick], log_loss[pick], delta)
            if refit is not None:
                samples.append(asdict(_as_law(refit, refit_value)))
        tail = (1 - confidence) / 2 * 100
        law.intervals = {
            key: (float(np.percentile([s[key] for s in samples], tail)), float(np.percentile([s[key] for s in samples], 100 - tail)))
            for key in ("E", "A", "B", "alpha", "beta")
        } if samples else {}
        law.intervals["bootstrap_samples"] = len(samples)
        law._bootstrap = [_as_law(np.array([s["alpha"], s["beta"], math.log(s["E"]), math.log(s["A"]), math.log(s["B"])]),
                                  s["objective"]) for s in samples]
    return law


def prediction_interval(law: ScalingLaw, n_params: float, tokens: float, confidence: float = 0.8) -> tuple[float, float]:
    """Bootstrap interval of the predicted loss at (N, D) (needs a fit with ``bootstrap``)."""
    fits = getattr(law, "_bootstrap", [])
    if not fits:
        return (float("nan"), float("nan"))
    values = [float(f.predict(n_params, tokens)) for f in fits]
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))
