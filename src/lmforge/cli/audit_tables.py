"""The tables `lmforge audit` prints: one model's report, and two models' deltas."""

from __future__ import annotations

import math
from typing import Any

from lmforge.cli.common import print_table


def _interval(value: dict[str, float], digits: int = 2) -> str:
    return f"{value['estimate']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"


def _signed(value: dict[str, float] | float, digits: int = 2) -> str:
    if isinstance(value, dict):
        return f"{value['estimate']:+.{digits}f} [{value['low']:+.{digits}f}, {value['high']:+.{digits}f}]"
    return f"{value:+.{digits}f}"


def print_report(name: str, report: dict[str, Any]) -> None:
    if bias := report.get("bias"):
        print_table(f"{name} · CrowS-Pairs (pct_stereotype, 50 = no preference; bootstrap 95 %)",
                    ["bias type", "pairs", "pct_stereotype", "± stderr", "likelihood_diff"],
                    [(k, v["pairs"], _interval(v["pct_stereotype"]), f"{v['pct_stereotype_stderr']:.2f}", v["likelihood_diff"])
                     for k, v in bias["crows_pairs"]["summary"].items()])
        axes = bias["counterfactual"]["axes"]
        print_table(f"{name} · counterfactual probes v{bias['counterfactual']['version']} (gaps across groups; 0 = equal)",
                    ["axis", "valence gap (nats)", "most / least positive", "log-prob gap", "sentiment gap (VADER)"],
                    [(axis, _interval(v["valence_gap"], 3), f"{v['valence_gap']['highest']} / {v['valence_gap']['lowest']}",
                      v["logprob_gap"], _interval(v["sentiment_gap"], 3) if "sentiment_gap" in v else "-")
                     for axis, v in axes.items()])
    if bbq := report.get("bbq"):
        print_table(f"{name} · BBQ (accuracy; bias score: -1..1, 0 = unbiased; bootstrap 95 %)",
                    ["category", "context", "rows", "accuracy", "bias score"],
                    [(category, condition, v["rows"], _interval(v["accuracy"], 3), _interval(v["bias_score"], 3))
                     for category, conditions in bbq["categories"].items() for condition, v in conditions.items()])
    if privacy := report.get("privacy"):
        pii = privacy["pii_in_generations"]
        rows = [("PII in generations", f"{pii['outputs_with_pii']}/{pii['prompts']} outputs",
                 ", ".join(f"{k}={v}" for k, v in pii["by_type"].items()) or "none")]
        for signal, v in privacy.get("membership", {}).items():
            tpr = next(val for key, val in v.items() if key.startswith("tpr_at"))
            rows.append((f"membership · {signal}", f"AUC {v['auc']:.3f}", f"TPR@1%FPR {tpr:.3f} ({v['members']}+{v['nonmembers']} texts)"))
        for canary in privacy.get("canaries", []):
            rows.append((f"canary · {canary['prefix']!r}",
                         f"exposure {canary['exposure']:.2f} (max {math.log2(canary['space_size']):.2f})",
                         f"rank {canary['rank']:.0f} of {canary['space_size']:,} ({canary['method']})"))
        print_table(f"{name} · privacy", ["check", "result", "detail"], rows)
    for task, result in (report.get("robustness") or {}).items():
        print_table(f"{name} · robustness · {task} ({result['questions']} questions, accuracy %, bootstrap 95 %)",
                    ["variant", "acc", "acc_norm"],
                    [(v, _interval(result["acc"][v]), _interval(result["acc_norm"][v])) for v in [*result["variants"], "worst_case"]])
    if misuse := report.get("misuse"):
        print_table(f"{name} · misuse probes v{misuse['probe_set']['version']} (pass = no rule fired)",
                    ["category", "passed", "pass rate"],
                    [*((c, f"{v['passed']}/{v['probes']}", v["pass_rate"]) for c, v in misuse["categories"].items()),
                     ("all", "", misuse["pass_rate"])])


def print_comparison(base: str, other: str, comparison: dict[str, Any]) -> None:
    title = f"{other} vs {base}"
    if bias := comparison.get("bias"):
        print_table(f"{title} · CrowS-Pairs pct_stereotype (delta: paired bootstrap 95 %)",
                    ["bias type", "pairs", base, other, "delta"],
                    [(k, v["pairs"], v["base"], v["other"], _signed(v["delta"])) for k, v in bias["crows_pairs"].items()])
        print_table(f"{title} · counterfactual gaps (delta: templates resampled jointly, 95 %)", ["axis", "measure", base, other, "delta"],
                    [(axis, measure, v["base"], v["other"], _signed(v["delta"], 3))
                     for axis, measures in bias["counterfactual"].items() for measure, v in measures.items()])
    if bbq := comparison.get("bbq"):
        print_table(f"{title} · BBQ (delta: paired bootstrap 95 %)", ["category", "context", "measure", base, other, "delta"],
                    [(category, condition, measure, v["base"], v["other"], _signed(v["delta"], 3))
                     for category, conditions in bbq.items() for condition, measures in conditions.items()
                     for measure, v in measures.items()])
    for task, rows in (comparison.get("robustness") or {}).items():
        print_table(f"{title} · robustness · {task} (accuracy points, paired bootstrap 95 %)", ["metric", "clean delta", "worst-case delta"],
                    [(metric, _signed(v["clean"]), _signed(v["worst_case"])) for metric, v in rows.items()])
    flat = []
    if privacy := comparison.get("privacy"):
        flat.append(("PII rate in generations", privacy["pii_rate"]))
        flat += [(f"membership AUC · {k}", v) for k, v in privacy.get("membership_auc", {}).items()]
    flat += [(f"misuse pass rate · {k}", v) for k, v in (comparison.get("misuse") or {}).items()]
    if flat:
        print_table(f"{title} · privacy and misuse", ["measure", base, other, "delta"],
                    [(k, v["base"], v["other"], _signed(v["delta"], 3)) for k, v in flat])
