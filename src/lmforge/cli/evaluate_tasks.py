"""The table `lmforge eval` prints for an lm-eval-format task or group."""

from __future__ import annotations

from typing import Any

from lmforge.cli.common import print_table
from lmforge.evaluate.tasks import TaskResult


def print_task_file(title: str, summary: dict[str, Any], results: list[TaskResult]) -> None:
    """One row per task and metric, the group's aggregate last (a large group shows its aggregate only)."""
    rows = [(r.task, r.num_fewshot, r.documents, metric,
             f"{value:.4f}" + (f" ± {r.stderr[metric]:.4f}" if r.stderr.get(metric) is not None else ""),
             f"{r.seconds:.1f}" + (" (cached)" if r.cached else ""))
            for r in results for metric, value in r.metrics.items()]
    if group := summary.get("group"):
        rows += [(group["name"], "", group["documents"], metric, f"{value:.4f}", "") for metric, value in group["metrics"].items()]
    if len(rows) > 40:  # a large group: its members' rows go to the JSON, the table keeps the aggregate
        rows = rows[-len(summary.get("group", {}).get("metrics", {})) or -40:]
    print_table(title, ["task", "shots", "docs", "metric,filter", "value", "seconds"], rows)
