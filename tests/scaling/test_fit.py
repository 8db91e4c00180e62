import numpy as np
import pytest

from lmforge.errors import LmforgeError
from lmforge.scaling import fit_scaling_law
from lmforge.scaling.fit import ScalingLaw

# Chinchilla's published fit (Hoffmann et al. 2022, eq. 10)
TRUE = ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def synthetic_ladder(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(np.geomspace(1e7, 3e9, 5), np.geomspace(2e8, 1e11, 5))
    n, d = n.ravel(), d.ravel()
    loss = TRUE.predict(n, d) * np.exp(rng.normal(0, noise, n.size))
    return n, d, loss


def test_recovers_known_parameters_from_noisy_runs():
    n, d, loss = synthetic_ladder(noise=0.005)
    law = fit_scaling_law(n, d, loss, starts=4)
    assert law.alpha == pytest.approx(TRUE.alpha, abs=0.03)
    assert law.beta == pytest.approx(TRUE.beta, abs=0.03)
    assert law.E == pytest.approx(TRUE.E, rel=0.06)
    # extrapolation 3x beyond the largest run in both N and D
    assert law.predict(1e10, 3e11) == pytest.approx(TRUE.predict(1e10, 3e11), rel=0.02)


def test_huber_shrugs_off_an_outlier():
    n, d, loss = synthetic_ladder(noise=0.0)
    loss[10] *= 1.5
    law = fit_scaling_law(n, d, loss, starts=4)
    assert law.alpha == pytest.approx(TRUE.alpha, abs=0.01) and law.beta == pytest.approx(TRUE.beta, abs=0.01)


def test_bootstrap_intervals_cover_the_truth():
    n, d, loss = synthetic_ladder(noise=0.005, seed=1)
    law = fit_scaling_law(n, d, loss, starts=4, bootstrap=10, confidence=0.95)
    low, high = law.intervals["alpha"]
    assert low < law.alpha < high and high - low < 0.3
    assert low - 0.03 < TRUE.alpha < high + 0.03


def test_compute_optimal_matches_brute_force():
    flops = 5.76e23  # Gopher's budget
    n_opt, d_opt = TRUE.compute_optimal(flops)
    grid = np.geomspace(1e9, 1e12, 200_001)
    brute = grid[np.argmin(TRUE.predict(grid, flops / (6 * grid)))]
    assert n_opt == pytest.approx(brute, rel=1e-3)
    assert 6 * n_opt * d_opt == pytest.approx(flops)
    assert 30e9 < n_opt < 60e9  # Chinchilla's eq.-10 fit gives ~40B parameters at Gopher's compute


def test_too_few_runs_is_a_clear_error():
    with pytest.raises(LmforgeError, match="at least 5"):
        fit_scaling_law([1, 2, 3], [1, 2, 3], [3, 2, 1])
