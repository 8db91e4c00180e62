"""One audit over several concerns, and the side-by-side comparison of two models' audits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from lmforge.audit.bias import (CrowsPairsResult, compare_counterfactual, compare_crows_pairs, counterfactual_probes,
                                crows_pairs)
from lmforge.audit.misuse import misuse_probes
from lmforge.audit.privacy import canary_exposure, membership_signals, pii_in_generations
from lmforge.audit.robustness import compare_robustness, robustness
from lmforge.errors import LmforgeError

SUITES = ("bias", "privacy", "robustness", "misuse")
ROBUSTNESS_TASKS = ("arc_easy", "piqa")


def parse_suites(text: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not names or (unknown := [s for s in names if s not in SUITES]):
        raise LmforgeError(f"unknown audit suite(s) {', '.join(unknown) if names else '(none)'}; choose from {', '.join(SUITES)}")
    return names


def audit(model, tokenizer, suites: Sequence[str] = SUITES, *, limit: int | None = None, robustness_limit: int = 200,
          tasks: Sequence[str] = ROBUSTNESS_TASKS, batch_size: int = 8, seed: int = 0, resamples: int = 1000,
          sentiment: bool = True, members: Sequence[str] | None = None, nonmembers: Sequence[str] | None = None,
          canaries: Sequence[dict[str, Any]] = (), data: str | Path | None = None,
          progress: Callable[[str], Callable[[int], None]] | None = None) -> dict[str, Any]:
    """Run the chosen audit suites; returns one JSON-ready dict keyed by suite.

    ``limit`` caps CrowS-Pairs pairs and robustness questions (default: all pairs, ``robustness_limit``
    questions per task). Membership signals run when ``members`` and ``nonmembers`` are given (texts from one
    distribution, the first trained on); canary exposure for each ``{"prefix", "secret", "alphabet"?}``.
    """
    step = progress or (lambda name: None)
    report: dict[str, Any] = {}
    if "bias" in suites:
        report["bias"] = {
            "crows_pairs": crows_pairs(model, tokenizer, limit=limit, batch_size=batch_size, resamples=resamples,
                                       seed=seed, data=data, progress=step("CrowS-Pairs")).to_dict(),
            "counterfactual": counterfactual_probes(model, tokenizer, sentiment=sentiment, batch_size=batch_size,
                                                    resamples=resamples, seed=seed, progress=step("counterfactual probes")),
        }
    if "privacy" in suites:
        privacy: dict[str, Any] = {"pii_in_generations": pii_in_generations(model, tokenizer, batch_size=batch_size,
                                                                           progress=step("PII in generations"))}
        if members and nonmembers:
            privacy["membership"] = membership_signals(model, tokenizer, members, nonmembers, batch_size=batch_size)
        if canaries:
            privacy["canaries"] = [{"prefix": c["prefix"], **canary_exposure(
                model, tokenizer, c["prefix"], c["secret"], alphabet=c.get("alphabet", "0123456789"),
                separator=c.get("separator", ""), seed=seed, batch_size=batch_size).to_dict()} for c in canaries]
        report["privacy"] = privacy
    if "robustness" in suites:
        report["robustness"] = {task: robustness(model, tokenizer, task, limit=limit or robustness_limit,
                                                 batch_size=batch_size, seed=seed, resamples=resamples, data=data,
                                                 progress=step(f"robustness {task}")) for task in tasks}
    if "misuse" in suites:
        report["misuse"] = misuse_probes(model, tokenizer, batch_size=batch_size, progress=step("misuse probes"))
    return report


def _side_by_side(base: Any, other: Any) -> dict[str, float]:
    """Two estimates (plain numbers or interval dicts) and their difference other - base."""
    value = lambda v: v["estimate"] if isinstance(v, dict) else float(v)
    return {"base": value(base), "other": value(other), "delta": value(other) - value(base)}


def compare_audits(base: dict[str, Any], other: dict[str, Any], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Deltas (other - base) for every suite both audits ran; paired bootstrap intervals where examples match."""
    result: dict[str, Any] = {}
    if "bias" in base and "bias" in other:
        result["bias"] = {
            "crows_pairs": compare_crows_pairs(CrowsPairsResult.from_dict(base["bias"]["crows_pairs"]),
                                               CrowsPairsResult.from_dict(other["bias"]["crows_pairs"])),
            "counterfactual": compare_counterfactual(base["bias"]["counterfactual"], other["bias"]["counterfactual"],
                                                     resamples, seed),
        }
    if "robustness" in base and "robustness" in other:
        result["robustness"] = {task: compare_robustness(base["robustness"][task], other["robustness"][task], resamples, seed)
                                for task in base["robustness"] if task in other["robustness"]}
    if "privacy" in base and "privacy" in other:
        privacy_base, privacy_other = base["privacy"], other["privacy"]
        result["privacy"] = {"pii_rate": _side_by_side(privacy_base["pii_in_generations"]["rate"],
                                                       privacy_other["pii_in_generations"]["rate"])}
        if "membership" in privacy_base and "membership" in privacy_other:
            result["privacy"]["membership_auc"] = {s: _side_by_side(privacy_base["membership"][s]["auc"],
                                                                    privacy_other["membership"][s]["auc"])
                                                   for s in privacy_base["membership"]}
    if "misuse" in base and "misuse" in other:
        categories_base = base["misuse"]["categories"]
        result["misuse"] = {"all": _side_by_side(base["misuse"]["pass_rate"], other["misuse"]["pass_rate"]),
                            **{c: _side_by_side(categories_base[c]["pass_rate"], v["pass_rate"])
                               for c, v in other["misuse"]["categories"].items() if c in categories_base}}
    return result
