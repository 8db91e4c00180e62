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
from lmforge.report.records import (
    badness, direction, family, find_first, flatten, is_number, model_of, numeric, output_of, path_or_text, short_name,
    task_metric,
)
from lmforge.runs import RunRecord

SIZE_KEYS = ("disk_bytes", "size_bytes", "model_bytes", "ram_bytes", "bytes")
QUALITY_KEYS = ("wikitext2.ppl", "ppl", "perplexity", "word_perplexity")
STAGES = ("before", "after", "base", "baseline", "original", "compressed", "result", "pruned", "quantized")
_AFTER = {"after", "compressed", "result", "pruned", "quantized"}


def by_family(runs: list[RunRecord], name: str) -> list[RunRecord]:
    return [r for r in runs if family(r) == name and r.status == "ok"]


def label(model: str | None, names: dict[str, str]) -> str:
    return names.get(model, short_name(model)) if model else "unknown model"


def model_label(run: RunRecord, names: dict[str, str]) -> str:
    """What a row stands for: the model a run measured (its output for compression runs)."""
    if family(run) == "compression" and output_of(run):
        return label(output_of(run), names)
    return label(model_of(run), names)


def run_label(run: RunRecord, names: dict[str, str]) -> str:
    return f"{model_label(run, names)} ({run.id[-6:]})"


def stage_split(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Metrics recorded as before/after (or base/compressed) pairs, split by stage; others under ''."""
    split: dict[str, dict[str, Any]] = defaultdict(dict)
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in STAGES and rest:
            split[head][rest] = value
        else:
            split[""][key] = value
    return dict(split)


def size_mb(flat: dict[str, Any]) -> float | None:
    if found := find_first(flat, *SIZE_KEYS):
        return found[1] / 1e6
    if found := find_first(flat, "size_mb", "disk_mb"):
        return found[1]
    return None


# --------------------------------------------------------------------------- model details


def model_details(runs: list[RunRecord], card: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    models: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: r.started):
        read = output_of(run) if run.command.startswith("models pull") else model_of(run)
        made = output_of(run) if family(run) in {"compression", "training"} else None
        for name, produced in ((read, False), (made, True)):
            if not name:
                continue
            entry = models.setdefault(name, {"model": name, "label": label(name, names), "first_run": run.id,
                                             "role": "derived" if produced else "input", "facts": {}})
            flat = flatten(run.metrics)
            stages = stage_split(flat)
            if produced:
                source = next((stages[s] for s in _AFTER if s in stages), stages.get("", {}))
            else:
                source = stages.get("before") or stages.get("base") or stages.get("", {})
            for key in ("architecture", "model_type", "parameters", "layers", "hidden_size", "context_length",
                        "vocab_size", "source", "hub_id", "pypi_package"):
                if key in source and key not in entry["facts"]:
                    entry["facts"][key] = source[key]
            for alias in ("params", "total_params"):  # what the training commands call it
                if produced and alias in source and "parameters" not in entry["facts"]:
                    entry["facts"]["parameters"] = source[alias]
            if (size := size_mb(source)) is not None and "size_mb" not in entry["facts"]:
                entry["facts"]["size_mb"] = size
            grid = flat.get("source_quantization.weight_grid_description")
            if grid and "source_quantization" not in entry["facts"]:
                entry["facts"]["source_quantization"] = grid
    latest_first = list(models.values())[::-1]  # the report is about the newest model made, else the newest read
    name = card.get("model_name") or next((m["label"] for m in latest_first if m["role"] == "derived"),
                                          next(iter(latest_first), {}).get("label"))
    return {"name": name or "unnamed model", "models": list(models.values()),
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


def measurements(runs: list[RunRecord], names: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per model a run measured: an eval run's model; each '<variant>.' group of a pipeline run
    (the quickstart); a compression run's before and after stages."""
    found = []
    for run in sorted(runs, key=lambda r: r.started):
        if run.status != "ok":
            continue
        kind = family(run)
        if kind == "evaluation":
            found.append({"label": run_label(run, names), "run": run.id, "flat": numeric(run.metrics), "table": True})
        elif kind == "pipeline":
            groups: dict[str, dict[str, float]] = defaultdict(dict)
            for key, value in numeric(run.metrics).items():
                head, _, rest = key.partition(".")
                if rest:
                    groups[head][rest] = value
            found += [{"label": f"{head} ({run.id[-6:]})", "run": run.id, "flat": flat, "table": True}
                      for head, flat in groups.items()]
        elif kind == "compression":
            for stage, flat in stage_split(flatten(run.metrics)).items():
                after = stage in _AFTER or stage == ""
                model = output_of(run) if after else model_of(run)
                name = label(model, names) if model else f"{run.command} {run.id[-6:]}"
                found.append({"label": name, "run": run.id, "flat": flat, "table": False})
    return found


def evaluation(runs: list[RunRecord], names: dict[str, str]) -> dict[str, Any]:
    measured = measurements(runs, names)
    columns = [{"label": m["label"], "run": m["run"]} for m in measured if m["table"]]
    rows = []
    for metric in sorted({k for m in measured if m["table"] for k in m["flat"]}):
        row = [m["flat"].get(metric) for m in measured if m["table"]]
        rows.append({"metric": metric, "raw": row, "values": [_shown(metric, v) for v in row],
                     "best": _best(metric, row), "direction": direction(metric)})
    points = quality_points(measured)
    plot = plots.quality_vs_size(points, points[0]["quality_metric"]) if points else None
    scored = [(found[1], _model_only(m["label"])) for m in measured if (found := find_first(m["flat"], *QUALITY_KEYS))]
    return {"columns": columns, "rows": rows, "points": points, "plot": plot,
            "best_perplexity": min(scored) if scored else None}


def _model_only(row_label: str) -> str:
    """'smollm2-135m (555c2e)' -> 'smollm2-135m': the model, without the run it was measured in."""
    return re.sub(r" \(\w{6}\)$", "", row_label)


def quality_points(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(size, perplexity) per model that has both; a later measurement of the same model wins."""
    found: dict[str, dict[str, Any]] = {}
    for m in measured:
        quality, size = find_first(m["flat"], *QUALITY_KEYS), size_mb(m["flat"])
        if quality is not None and size is not None:
            name = _model_only(m["label"])  # one point per model, not per run
            found[name] = {"label": name, "size_mb": size, "quality": quality[1], "quality_metric": quality[0],
                           "run": m["run"]}
    return list(found.values())


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


def audit_views(run: RunRecord, names: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(label, flat metrics) per audited model: the run's full audit.json when it wrote one, else its headline."""
    full = None
    for path in run.artifacts.values():
        if str(path).endswith(".json") and Path(path).is_file():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(Path(path).read_text(encoding="utf-8"))
                if isinstance(data, dict) and isinstance(data.get("report"), dict):
                    full = data
    metrics = flatten(run.metrics)
    views = [(run_label(run, names), flatten(full["report"]) if full else
              {k: v for k, v in metrics.items() if not k.startswith("compare.")})]
    other = run.config.get("compare")
    if other:
        other_flat = flatten(full["compare_report"]) if full and isinstance(full.get("compare_report"), dict) else \
            {k.removeprefix("compare."): v for k, v in metrics.items() if k.startswith("compare.")}
        views.append((f"{label(path_or_text(run.inputs.get(other)) or other, names)} ({run.id[-6:]})", other_flat))
    return views


def bias(runs: list[RunRecord], names: dict[str, str]) -> dict[str, Any]:
    """CrowS-Pairs style results: pct_stereotype per bias type, with intervals, for each audited model."""
    table, series, categories = [], {}, []
    views = [view for run in sorted(by_family(runs, "audit"), key=lambda r: r.started) for view in audit_views(run, names)]
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


def robustness(runs: list[RunRecord], names: dict[str, str]) -> dict[str, Any]:
    """Metrics under a 'robust...' name; accuracy per variant (clean, each perturbation, worst case) is plotted."""
    rows, series, variants = [], {}, []
    views = [view for run in sorted(by_family(runs, "audit"), key=lambda r: r.started) for view in audit_views(run, names)]
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


def compression(runs: list[RunRecord], names: dict[str, str]) -> dict[str, Any]:
    steps = []
    produced_by = {}
    for run in sorted(by_family(runs, "compression"), key=lambda r: r.started):
        base, result = model_of(run), output_of(run)
        stages = stage_split(flatten(run.metrics))
        before = stages.get("before") or stages.get("base") or stages.get("baseline") or stages.get("original") or {}
        after = next((stages[s] for s in _AFTER if s in stages), stages.get("", {}))
        headline = []
        for name, keys in (("perplexity", QUALITY_KEYS), ("accuracy", ("arc_easy.acc", "acc")),
                           ("decode tok/s", ("decode_tokens_per_s", "tokens_per_s"))):
            b, a = find_first(before, *keys), find_first(after, *keys)
            if a is not None:
                headline.append({"name": name, "before": fmt(b[1]) if b else "–", "after": fmt(a[1]),
                                 "change": f"{(a[1] - b[1]) / b[1]:+.1%}" if b and b[1] else ""})
        size_b, size_a = size_mb(before), size_mb(after)
        if size_a is not None:
            headline.append({"name": "size (MB)", "before": fmt(size_b) if size_b else "–", "after": fmt(size_a),
                             "change": f"{(size_a - size_b) / size_b:+.1%}" if size_b else ""})
        base_input = run.inputs.get("model")
        recipe = {k: v for k, v in run.config.items() if k not in {"model", "output", "out", "output_dir"}}
        steps.append({
            "run": run.id, "command": run.command, "base": label(base, names), "base_path": base or "missing",
            "base_hash": base_input.get("hash") if isinstance(base_input, dict) else None,
            "derived_from": produced_by.get(base),
            "recipe": ", ".join(f"{k}={v}" for k, v in recipe.items()) or "missing",
            "result": label(result, names) if result else "missing", "result_path": result or "missing",
            "headline": headline,
        })
        if result:
            produced_by[result] = run.id
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


def training_data(runs: list[RunRecord], names: dict[str, str]) -> dict[str, Any]:
    cards = []
    for run in sorted(by_family(runs, "data"), key=lambda r: r.started):
        markdown = html = None
        for name, path in run.artifacts.items():
            path = Path(path)
            if "card" not in name or not path.is_file():
                continue
            if path.suffix == ".html":  # the data pipeline's own self-contained card, shown as it is
                html = path.read_text(encoding="utf-8", errors="replace")
            elif path.suffix == ".md":
                markdown = path.read_text(encoding="utf-8", errors="replace")[:20000]
        inputs = {k: (v.get("path"), v.get("hash")) if isinstance(v, dict) else (str(v), None)
                  for k, v in run.inputs.items()}
        cards.append({"run": run.id, "command": run.command, "inputs": inputs,
                      "metrics": [(k, fmt(v)) for k, v in numeric(run.metrics).items()],
                      "artifacts": run.artifacts, "markdown": markdown, "html": html})
    trained_on = []
    for run in by_family(runs, "training"):
        for key, value in run.inputs.items():
            if key != "model":
                trained_on.append({"run": run.id, "command": run.command, "name": key,
                                   "path": value.get("path") if isinstance(value, dict) else str(value),
                                   "hash": value.get("hash") if isinstance(value, dict) else None})
    training = [{"run": run.id, "command": run.command, "model": label(output_of(run), names) if output_of(run) else "–",
                 "metrics": [(k, fmt(v)) for k, v in numeric(run.metrics).items()]}
                for run in sorted(by_family(runs, "training"), key=lambda r: r.started)]
    evaluated_on = sorted({named[0] for m in measurements(runs, names) if m["table"] for key in m["flat"]
                           if (named := task_metric(key))})
    return {"cards": cards, "trained_on": trained_on, "training": training, "evaluated_on": evaluated_on}


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


def all_metrics(runs: list[RunRecord], names: dict[str, str]) -> list[dict[str, Any]]:
    return [{"run": r.id, "command": r.command, "status": r.status, "started": r.started_iso,
             "seconds": fmt(r.seconds) if r.seconds else "–", "model": label(model_of(r), names) if model_of(r) else "–",
             "metrics": [(k, fmt(v) if is_number(v) else _clip(str(v))) for k, v in flatten(r.metrics).items()],
             "error": r.error} for r in sorted(runs, key=lambda r: r.started)]


def human_size(mb: float | None) -> str:
    return human_bytes(mb * 1e6) if mb is not None else "–"
