"""Statistics the audits share: bootstrap intervals, paired deltas between two models, ROC summaries."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass
class Interval:
    """A point estimate with a percentile-bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def bootstrap_mean(values, resamples: int = 1000, level: float = 0.95, seed: int = 0, scale: float = 1.0) -> Interval:
    """Mean of ``values`` with a percentile-bootstrap interval (examples resampled with replacement)."""
    values = np.asarray(values, dtype=np.float64) * scale
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), level)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high), level)


def bootstrap_statistic(statistic: Callable[..., np.ndarray], columns: Sequence, resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> Interval:
    """``statistic(*columns)`` of per-example columns with a percentile-bootstrap interval (examples resampled
    with replacement, all columns together). ``statistic`` reduces the last axis: it gets [n] arrays for the
    estimate and [resamples, n] arrays for the interval."""
    columns = [np.asarray(c, dtype=np.float64) for c in columns]
    n = columns[0].size
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), level)
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    values = statistic(*(c[picks] for c in columns))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(statistic(*columns)), float(low), float(high), level)


def paired_bootstrap_delta(base, other, resamples: int = 1000, level: float = 0.95, seed: int = 0,
                           scale: float = 1.0) -> Interval:
    """mean(other) - mean(base) over the same examples, resampling examples jointly (a paired bootstrap)."""
    base, other = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if base.shape != other.shape:
        raise ValueError(f"paired samples differ in shape: {base.shape} vs {other.shape}")
    return bootstrap_mean(other - base, resamples, level, seed, scale)


def auc(member_scores, nonmember_scores) -> float:
    """Area under the ROC curve = P(member score > non-member score), ties counting half (Mann-Whitney U)."""
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    everything = np.concatenate([members, nonmembers])
    order = everything.argsort(kind="mergesort")
    ranks = np.empty_like(everything)
    sorted_values = everything[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[: members.size].sum() - members.size * (members.size + 1) / 2
    return float(u / (members.size * nonmembers.size))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = 0.01) -> float:
    """Share of members flagged when the threshold lets through at most ``fpr`` of the non-members.

    The threshold is the smallest score that at most ``floor(fpr * n)`` non-members exceed,
    members count as flagged when strictly above it.
    """
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.sort(np.asarray(nonmember_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(fpr * nonmembers.size))
    threshold = nonmembers[allowed] if allowed < nonmembers.size else -np.inf
    return float((members > threshold).mean())
