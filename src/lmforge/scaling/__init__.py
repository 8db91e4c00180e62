"""Scaling laws: fit L(N, D) to a ladder of training runs, predict, and plan compute-optimal N and D."""

from lmforge.scaling.fit import DEFAULT_GRID, ScalingLaw, fit_scaling_law, prediction_interval
from lmforge.scaling.ladder import LadderResult, Rung, fit_ladder, parse_size, plot_ladder

__all__ = [
    "DEFAULT_GRID",
    "LadderResult",
    "Rung",
    "ScalingLaw",
    "fit_ladder",
    "fit_scaling_law",
    "parse_size",
    "plot_ladder",
    "prediction_interval",
]
