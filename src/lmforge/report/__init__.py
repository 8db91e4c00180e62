"""Model and data cards from the run store: one self-contained HTML report, a HF README.md, run comparison."""

from lmforge.report.annex import ANNEX_XI
from lmforge.report.build import SECTIONS, build_report, load_card, model_card, render_html, report_context, select_runs
from lmforge.report.compare import MetricDelta, compare_runs, regressions
from lmforge.report.screenshot import screenshot

__all__ = [
    "ANNEX_XI",
    "SECTIONS",
    "MetricDelta",
    "build_report",
    "compare_runs",
    "load_card",
    "model_card",
    "regressions",
    "render_html",
    "report_context",
    "screenshot",
    "select_runs",
]
