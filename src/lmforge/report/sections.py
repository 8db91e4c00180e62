"""The report's sections, each built from run records alone (plus what the user states in a card file).

Every builder returns a plain dict the templates render; a section with nothing
recorded says so instead of disappearing, so a reader sees what is missing.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from lmforge.formatting import fmt, human_bytes
from lmforge.report import plots
from lmforge.report.records import Catalog, badness, direction, family, find_first, flatten, is_number, numeric, task_metric
from lmforge.runs import CompressionResult, ModelRef, RunRecord

QUALITY_KEYS = ("wikitext2.ppl", "ppl", "perplexity", "word_perplexity")
_FACTS = ("architecture", "model_type", "parameters", "dtype", "layers", "hidden_size", "context_length", "vocab_size")


def by_family(runs: list[RunRecord], name: str) -> list[RunRecord]:
    return [r for r in runs if family(r) == name and r.status == "ok" and r.result is not None]


def run_model(run: RunRecord, catalog: Catalog) -> str:
    """What a run was about: its first model (the one it made, for compression)."""
    models = run.result.models() if run.result else []
    return catalog.label(models[0][1]) if models else "–"


def size_mb(metrics: dict[str, float], ref: ModelRef | None = None) -> float | None:
    """Stored size: bytes on disk (measured, or known of the model), else bytes in memory."""
    for value in (metrics.get("disk_bytes"), ref.disk_bytes if ref else None, metrics.get("model_bytes")):
        if is_number(value):
            return value / 1e6
    return None


# --------------------------------------------------------------------------- model details


def model_details(runs: list[RunRecord], card: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    models = []
    for known in catalog.models:
        facts = {k: getattr(known.ref, k) for k in _FACTS if getattr(known.ref, k) is not None}
        if (size := size_mb({}, known.ref)) is not None:
            facts["size_mb"] = size
        if known.ref.hash:
            facts["content_hash"] = known.ref.hash
        models.append({"model": known.ref.path or known.ref.name, "label": known.label, "first_run": known.first_run,
                       "role": known.role, "facts": facts})
    latest_first = models[::-1]  # the report is about the newest model made, else the newest read
    name = card.get("model_name") or next((m["label"] for m in latest_first if m["role"] == "derived"),
                                          next(iter(latest_first), {}).get("label"))
    return {"name": name or "unnamed model", "models": models,
            "stated": {k: card[k] for k in ("model_name", "version", "authors", "contact", "license", "base_model",
                                             "language") if card.get(k)}}


# --------------------------------------------------------------------------- evaluation


def _shown(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    return human_bytes(value) if metric.endswith("bytes") else fmt(value)


def _best(metric: str, values: list[float | None]) -> int | None:
    scored = [(badness(metric, v), i) for i, v in enumerate(values) if v is not None]
    scored = [(b, i) for b, i in scored if b is not None]
    return min(scored)[1] if len(scored) > 1 else None


def measurements(runs: list[RunRecord], catalog: Catalog) -> list[dict[str, Any]]:
    """One entry per model: every number any run measured for it (an eval run's tasks, a compress run's
    before and after, an audit's scores); a later run's value of the same metric wins."""
    found: dict[int, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: r.started):
        if run.result is None or run.status != "ok":
            continue
        for entry in run.result.measured():
            numbers = {k: v for k, v in entry.metrics.items() if is_number(v)}
            if not numbers:
                continue
            known = catalog.find(entry.model)
            column = found.setdefault(id(known), {"label": known.label, "ref": known.ref, "runs": [], "flat": {}})
            column["flat"].update(numbers)
            if run.id not in column["runs"]:
                column["runs"].append(run.id)
    return list(found.values())


def evaluation(runs: list[RunRecord], catalog: Catalog) -> dict[str, Any]:
    measured = measurements(runs, catalog)
    columns = [{"label": m["label"], "run": ", ".join(m["runs"])} for m in measured]
    rows = []
    for metric in sorted({k for m in measured for k in m["flat"]}):
        row = [m["flat"].get(metric) for m in measured]
        rows.append({"metric": metric, "raw": row, "values": [_shown(metric, v) for v in row],
                     "best": _best(metric, row), "direction": direction(metric)})
    points = quality_points(measured)
    plot = plots.quality_vs_size(points, points[0]["quality_metric"]) if points else None
    scored = [(found[1], m["label"]) for m in measured if (found := find_first(m["flat"], *QUALITY_KEYS))]
    return {"columns": columns, "rows": rows, "points": points, "plot": plot,
            "best_perplexity": min(scored) if scored else None}


def quality_points(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(size, perplexity) of every model that has both."""
    points = []
    for m in measured:
        quality, size = find_first(m["flat"], *QUALITY_KEYS), size_mb(m["flat"], m["ref"])
        if quality is not None and size is not None:
            points.append({"label": m["label"], "size_mb": size, "quality": quality[1], "quality_metric": quality[0],
                           "run": m["runs"][-1]})
    return points


# --------------------------------------------------------------------------- bias and robustness


_ESTIMATE = ("estimate", "value", "mean")
_BOUNDS = {"low", "high", "lower", "upper", "level", "ci", "ci95", "ci_low", "ci_high"}


def interval_of(flat: dict[str, Any], base: str) -> tuple[float | None, float | None]:
    """The (low, high) recorded beside metric ``base``: base.low/.high, base_low/_high, base.ci = [low, high] ..."""
    for low_key, high_key in ((".low", ".high"), ("_low", "_high"), (".ci_low", ".ci_high"), ("_ci_low", "_ci_high"),
                              (".lower", ".upper")):
        low, high = flat.get(base + low_key), flat.get(base + high_key)
        if is_number(low) and is_number(high):
            return float(low), float(high)
    for key in (".ci", "_ci", ".ci95", "_ci95", ".interval"):
        value = flat.get(base + key)
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value):
            return float(value[0]), float(value[1])
    return None, None


def estimates(flat: dict[str, Any], where: Callable[[str], bool]) -> list[tuple[str, float, float | None, float | None]]:
    """(metric, value, low, high) for the metrics ``where`` selects; interval bounds are folded into their metric."""
    found = []
    for key, value in flat.items():
        if not is_number(value) or not where(key):
            continue
        head, _, last = key.rpartition(".")
        if last in _BOUNDS or "stderr" in last or last.endswith(("_low", "_high")):
            continue
        base = head if last in _ESTIMATE and head else key
        found.append((base, float(value), *interval_of(flat, base)))
    return found


def audit_views(run: RunRecord, catalog: Catalog) -> list[tuple[str, dict[str, Any]]]:
    """(label, flat numbers) per audited model: the run's full audit.json when it wrote one, else its scores."""
    result = run.result
    full = None
    if result.report and Path(result.report).is_file():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(Path(result.report).read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("report"), dict):
                full = data
    views = [(f"{catalog.label(result.model)} ({run.id[-6:]})", flatten(full["report"]) if full else result.scores)]
    if result.compare:
        compared = full.get("compare_report") if full else None
        views.append((f"{catalog.label(result.compare)} ({run.id[-6:]})",
                      flatten(compared) if isinstance(compared, dict) else result.compare_scores))
    return views


def bias(runs: list[RunRecord], catalog: Catalog) -> dict[str, Any]:
    """CrowS-Pairs style results: pct_stereotype per bias type, with intervals, for each audited model."""
    table, series, categories = [], {}, []
    views = [view for run in sorted(by_family(runs, "audit"), key=lambda r: r.started) for view in audit_views(run, catalog)]
    for row_label, flat in views:
        for metric, value, low, high in estimates(flat, lambda k: k.rpartition(".")[0].endswith(
                "pct_stereotype") or k.endswith("pct_stereotype")):
            parts = metric.split(".")[:-1]
            category = parts[-1] if parts and parts[-1] not in {"crows_pairs", "bias", "overall", "all", "by_type",
                                                                 "summary"} else "overall"
            table.append({"model": row_label, "category": category, "value": value, "low": low, "high": high})
            if category not in categories:
                categories.append(category)
            series.setdefault(row_label, {})[category] = (value, low, high)
    plot = None
    if table:
        categories.sort(key=lambda c: (c != "overall", c))
        reference = 50.0 if max(r["value"] for r in table) > 1 else 0.5
        plot = plots.grouped_bars(
            categories, {name: [vals.get(c, (0.0, None, None)) for c in categories] for name, vals in series.items()},
            "CrowS-Pairs: share of pairs where the stereotype is preferred", "pct_stereotype (50 = no preference)",
            reference=reference)
    return {"rows": table, "plot": plot}


def robustness(runs: list[RunRecord], catalog: Catalog) -> dict[str, Any]:
    """Metrics under a 'robust...' name; accuracy per variant (clean, each perturbation, worst case) is plotted."""
    rows, series, variants = [], {}, []
    views = [view for run in sorted(by_family(runs, "audit"), key=lambda r: r.started) for view in audit_views(run, catalog)]
    for row_label, flat in views:
        for metric, value, low, high in estimates(flat, lambda k: "robust" in k or re.search(r"acc_(clean|worst_case)$", k)):
            if metric.endswith(".seed"):
                continue
            rows.append({"model": row_label, "metric": metric, "value": fmt(value),
                         "interval": f"{fmt(low)} – {fmt(high)}" if low is not None else "–"})
            parts = metric.split(".")
            if len(parts) >= 2 and parts[-2] == "acc":  # accuracy per variant: robustness[.task].acc.<variant>
                task = parts[-3] if len(parts) >= 3 and "robust" not in parts[-3] else ""
                series.setdefault(f"{row_label} {task}".strip(), {})[parts[-1]] = (value, low, high)
                if parts[-1] not in variants:
                    variants.append(parts[-1])
    plot = None
    if series:
        variants.sort(key=lambda v: (v != "clean", "worst" in v))
        plot = plots.grouped_bars(variants, {name: [vals.get(v, (0.0, None, None)) for v in variants]
                                             for name, vals in series.items()},
                                  "Accuracy, clean, per perturbation and worst case per question", "accuracy",
                                  horizontal=False)
    return {"rows": rows, "plot": plot}


# --------------------------------------------------------------------------- compression lineage


_HEADLINE = (("perplexity", QUALITY_KEYS), ("accuracy", ("arc_easy.acc", "acc")),
             ("decode tok/s", ("speed.decode_tokens_per_s", "decode_tokens_per_s", "tokens_per_s")))


def compression(runs: list[RunRecord], catalog: Catalog) -> dict[str, Any]:
    steps = []
    produced_by: dict[int, str] = {}
    for run in sorted(by_family(runs, "compression"), key=lambda r: r.started):
        result: CompressionResult = run.result
        before, after = result.base_metrics, result.output_metrics
        headline = []
        for name, keys in _HEADLINE:
            b, a = find_first(before, *keys), find_first(after, *keys)
            if a is not None:
                headline.append({"name": name, "before": fmt(b[1]) if b else "–", "after": fmt(a[1]),
                                 "change": f"{(a[1] - b[1]) / b[1]:+.1%}" if b and b[1] else ""})
        for name, key in (("size on disk (MB)", "disk_bytes"), ("model RAM (MB)", "model_bytes")):
            size_b = before.get(key) or getattr(result.base, key)  # like with like: disk with disk, RAM with RAM
            size_a = after.get(key) or getattr(result.output, key)
            if size_a:
                headline.append({"name": name, "before": fmt(size_b / 1e6) if size_b else "–", "after": fmt(size_a / 1e6),
                                 "change": f"{(size_a - size_b) / size_b:+.1%}" if size_b else ""})
        base, output = catalog.find(result.base), catalog.find(result.output)
        steps.append({
            "run": run.id, "command": run.command, "base": base.label, "base_path": result.base.path or result.base.name,
            "base_hash": result.base.hash, "derived_from": produced_by.get(id(base)),
            "recipe": ", ".join(f"{k}={v}" for k, v in result.recipe.items()) or "missing",
            "result": output.label, "result_path": result.output.path or result.output.name,
            "headline": headline,
        })
        produced_by[id(output)] = run.id
    return {"steps": steps}


# --------------------------------------------------------------------------- energy


def energy(runs: list[RunRecord]) -> dict[str, Any]:
    rows, by_command = [], defaultdict(float)
    totals = {"energy_kwh": 0.0, "co2_kg": 0.0, "seconds": 0.0, "flops": 0.0}
    for run in sorted(runs, key=lambda r: r.started):
        flat_energy = flatten(run.energy)
        kwh, co2 = flat_energy.get("energy_kwh"), flat_energy.get("co2_kg")
        flops = find_first({**flatten(run.metrics), **flat_energy}, "flops", "train_flops", "inference_flops",
                           "total_flops")
        if not is_number(kwh) and flops is None:
            continue
        seconds = flat_energy.get("duration_s") if is_number(flat_energy.get("duration_s")) else run.seconds
        rows.append({"run": run.id, "command": run.command, "seconds": fmt(seconds) if seconds else "–",
                     "energy_kwh": fmt(kwh) if is_number(kwh) else "–",
                     "co2_g": fmt(co2 * 1000) if is_number(co2) else "–",
                     "flops": fmt(flops[1]) if flops else "–", "method": flat_energy.get("method", "–"),
                     "country": flat_energy.get("country", "–")})
        if is_number(kwh):
            totals["energy_kwh"] += kwh
            by_command[run.command.split()[0]] += kwh
        if is_number(co2):
            totals["co2_kg"] += co2
        totals["seconds"] += seconds or 0.0
        totals["flops"] += flops[1] if flops else 0.0
    plot = None
    if by_command:
        names = sorted(by_command, key=by_command.get, reverse=True)
        plot = plots.grouped_bars(names, {"energy": [(by_command[n] * 1000, None, None) for n in names]},
                                  "Energy by command", "Wh")
    shown = {"energy_kwh": fmt(totals["energy_kwh"]), "co2_g": fmt(totals["co2_kg"] * 1000),
             "seconds": fmt(totals["seconds"]), "flops": fmt(totals["flops"]) if totals["flops"] else "–"}
    return {"rows": rows, "totals": totals, "shown": shown, "plot": plot}


# --------------------------------------------------------------------------- data


def training_data(runs: list[RunRecord], catalog: Catalog) -> dict[str, Any]:
    cards = []
    for run in sorted(by_family(runs, "data"), key=lambda r: r.started):
        card = Path(run.result.card) if run.result.card else None
        html = markdown = None
        if card is not None and card.is_file():
            text = card.read_text(encoding="utf-8", errors="replace")
            html, markdown = (text, None) if card.suffix == ".html" else (None, text[:20000])
        inputs = {k: (v.get("path") or v.get("name"), v.get("hash")) for k, v in run.result.inputs().items()}
        cards.append({"run": run.id, "command": run.command, "inputs": inputs,
                      "metrics": [(k, fmt(v)) for k, v in numeric(run.metrics).items()],
                      "artifacts": run.artifacts, "markdown": markdown, "html": html})
    training = sorted(by_family(runs, "training"), key=lambda r: r.started)
    trained_on = [{"run": run.id, "command": run.command, "name": name, "path": ref.path or ref.name, "hash": ref.hash}
                  for run in training for name, ref in run.result.data.items()]
    rows = [{"run": run.id, "command": run.command, "model": catalog.label(run.result.model),
             "metrics": [(k, fmt(v)) for k, v in numeric(run.metrics).items()]} for run in training]
    evaluated_on = sorted({named[0] for m in measurements(runs, catalog) for key in m["flat"]
                           if (named := task_metric(key))})
    return {"cards": cards, "trained_on": trained_on, "training": rows, "evaluated_on": evaluated_on}


# --------------------------------------------------------------------------- limitations


def derived_limitations(bias_section: dict, compression_section: dict, evaluated_on: list[str]) -> list[str]:
    """Limitations the records themselves show, in plain words."""
    notes = []
    for row in bias_section["rows"]:
        if row["category"] == "overall":
            half = 50.0 if row["value"] > 1 else 0.5
            side = "prefers the stereotyping sentence" if row["value"] > half else "prefers the anti-stereotyping one"
            interval = f" (95 % interval {fmt(row['low'])}–{fmt(row['high'])})" if row["low"] is not None else ""
            notes.append(f"{row['model']}: CrowS-Pairs pct_stereotype {fmt(row['value'])}{interval}; the model "
                         f"{side} more often than an unbiased model would.")
    for step in compression_section["steps"]:
        for item in step["headline"]:
            if item["name"] == "perplexity" and item["change"]:
                notes.append(f"{step['result']}: compression ({step['command']}) changed perplexity by "
                             f"{item['change']} against {step['base']}.")
    if evaluated_on:
        notes.append(f"Evaluated on {', '.join(evaluated_on)} only (English); quality on other languages and "
                     "domains is not measured here.")
    return notes


def _clip(text: str, limit: int = 160) -> str:
    """Long values (per-example lists) are cut: the report lists metrics, the run store keeps the data."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def all_metrics(runs: list[RunRecord], catalog: Catalog) -> list[dict[str, Any]]:
    return [{"run": r.id, "command": r.command, "status": r.status, "started": r.started_iso,
             "seconds": fmt(r.seconds) if r.seconds else "–", "model": run_model(r, catalog),
             "metrics": [(k, fmt(v) if is_number(v) else _clip(str(v))) for k, v in flatten(r.metrics).items()],
             "error": r.error} for r in sorted(runs, key=lambda r: r.started)]


def human_size(mb: float | None) -> str:
    return human_bytes(mb * 1e6) if mb is not None else "–"
