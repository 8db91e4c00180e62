"""`lmforge eval MODEL --task <lm-eval task name | task .yaml>`: run lm-eval task files and print their metrics."""

from __future__ import annotations

from typing import Any, Sequence

from lmforge.cli.common import print_table, progress_bar
from lmforge.evaluate.tasks import (EvalSettings, GroupConfig, RequestCache, TaskResult, aggregate_group, evaluate_task,
                                    expand, resolve)
from lmforge.paths import home_dir


def run_task_file(model, tokenizer, name: str, settings: EvalSettings, *, include_paths: Sequence[str] = (),
                  cache: bool = False, title: str = "") -> tuple[dict[str, Any], list[TaskResult]]:
    """Evaluate a task or group; prints one row per task and metric (groups last) and returns (metrics, results)."""
    config = resolve(name, include_paths)
    request_cache = RequestCache(home_dir() / "eval-cache") if cache else None
    results = []
    for task in expand(config, include_paths):
        with progress_bar(task.task, None) as advance:
            results.append(evaluate_task(model, tokenizer, task, settings, cache=request_cache, progress=advance,
                                         on_total=advance.set_total))
    rows = [(r.task, r.num_fewshot, r.documents, metric,
             f"{value:.4f}" + (f" ± {r.stderr[metric]:.4f}" if r.stderr.get(metric) is not None else ""),
             f"{r.seconds:.1f}" + (" (cached)" if r.cached else ""))
            for r in results for metric, value in r.metrics.items()]
    summary: dict[str, Any] = {"tasks": {r.task: r.to_dict() for r in results}}
    if isinstance(config, GroupConfig):
        summary["group"] = {"name": config.group, "metrics": aggregate_group(config, results),
                            "documents": sum(r.documents for r in results)}
        rows += [(config.group, "", summary["group"]["documents"], metric, f"{value:.4f}", "")
                 for metric, value in summary["group"]["metrics"].items()]
    if len(rows) > 40:  # a large group: its members' rows go to the JSON, the table keeps the aggregate
        rows = rows[-len(summary.get("group", {}).get("metrics", {})) or -40:]
    print_table(f"{title} · {name}", ["task", "shots", "docs", "metric,filter", "value", "seconds"], rows)
    return summary, results


def run_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Run-record metrics named '<task>.<metric>' ('<task>.<filter>.<metric>' for a filter other than none),
    the names the report reads (lmforge.report.records.task_metric)."""
    def named(task: str, key: str) -> str:
        metric, _, filter_name = key.partition(",")
        return f"{task}.{metric}" if filter_name in ("", "none") else f"{task}.{filter_name}.{metric}"

    flat = {}
    for task, result in summary["tasks"].items():
        flat.update({named(task, k): v for k, v in result["metrics"].items()})
        flat.update({named(task, k) + "_stderr": v for k, v in result["stderr"].items() if v is not None})
    if group := summary.get("group"):
        flat.update({named(group["name"], k): v for k, v in group["metrics"].items()})
    return flat
