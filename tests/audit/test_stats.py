import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.audit.stats import auc, bootstrap_mean, paired_bootstrap_delta, tpr_at_fpr

scores = st.lists(st.integers(-5, 5).map(float), min_size=2, max_size=40)


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_auc_equals_pairwise_count_with_half_ties(members, nonmembers):
    brute = sum((m > n) + 0.5 * (m == n) for m, n in itertools.product(members, nonmembers))
    assert auc(members, nonmembers) == pytest.approx(brute / (len(members) * len(nonmembers)))


@settings(max_examples=60, deadline=None)
@given(scores, st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=300), st.sampled_from([0.01, 0.1, 0.3]))
def test_tpr_at_fpr_is_the_best_threshold_within_the_budget(members, nonmembers, fpr):
    # brute force: among thresholds whose false-positive rate stays within the budget, the best true-positive rate
    thresholds = sorted(set(members + nonmembers + [float("-inf"), float("inf")]))
    feasible = [t for t in thresholds if np.mean(np.array(nonmembers) > t) <= fpr + 1e-12]
    best = max(np.mean(np.array(members) > t) for t in feasible)
    assert tpr_at_fpr(members, nonmembers, fpr) == pytest.approx(best)


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    values = np.random.default_rng(1).binomial(1, 0.56, size=600).astype(float)
    ours = bootstrap_mean(values, resamples=4000, seed=0, scale=100)
    theirs = bootstrap((values * 100,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    assert ours.estimate == pytest.approx(values.mean() * 100)
    assert ours.low == pytest.approx(theirs.low, abs=0.6) and ours.high == pytest.approx(theirs.high, abs=0.6)
    assert ours.low < ours.estimate < ours.high


def test_paired_delta_of_identical_samples_is_exactly_zero():
    values = np.random.default_rng(0).binomial(1, 0.5, size=100)
    delta = paired_bootstrap_delta(values, values)
    assert (delta.estimate, delta.low, delta.high) == (0.0, 0.0, 0.0)
