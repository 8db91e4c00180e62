"""Compare two runs metric by metric, with direction-aware regression flags (in the spirit of MLflow's run diff)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmforge.report.records import badness, direction, numeric
from lmforge.runs import RunRecord


@dataclass
class MetricDelta:
    metric: str
    a: float | None
    b: float | None
    delta: float | None
    relative: float | None  # delta / |a|
    direction: str | None  # 'lower', 'higher', 'half' or None (the name does not say)
    verdict: str  # 'better', 'worse', 'same', 'regression', 'only in A', 'only in B', 'changed'

    def to_dict(self) -> dict:
        return asdict(self)


def compare_runs(a: RunRecord, b: RunRecord, threshold: float = 0.01) -> list[MetricDelta]:
    """Every numeric metric of A and B. A change for the worse larger than ``threshold`` (relative) is a regression."""
    left, right = numeric(a.metrics), numeric(b.metrics)
    rows = []
    for metric in sorted(left.keys() | right.keys()):
        x, y = left.get(metric), right.get(metric)
        if x is None or y is None:
            rows.append(MetricDelta(metric, x, y, None, None, direction(metric), "only in A" if y is None else "only in B"))
            continue
        delta = y - x
        relative = delta / abs(x) if x else (0.0 if delta == 0 else None)
        bad_a, bad_b = badness(metric, x), badness(metric, y)
        if delta == 0:
            verdict = "same"
        elif bad_a is None:
            verdict = "changed"
        elif bad_b < bad_a:
            verdict = "better"
        else:
            worse_by = (bad_b - bad_a) / max(abs(x), 1e-12)
            verdict = "regression" if worse_by > threshold else "worse"
        rows.append(MetricDelta(metric, x, y, delta, relative, direction(metric), verdict))
    return rows


def regressions(deltas: list[MetricDelta]) -> list[MetricDelta]:
    return [d for d in deltas if d.verdict == "regression"]
