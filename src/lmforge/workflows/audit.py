"""One audit over several concerns, and the side-by-side comparison of two models' audits.

Robustness lives here because it joins the two packages: evaluate's multiple-choice tasks, scored under audit's
perturbations.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lmforge.audit.bbq import BbqResult, bbq, compare_bbq
from lmforge.audit.bias import (CrowsPairsResult, compare_counterfactual, compare_crows_pairs, counterfactual_probes,
                                crows_pairs)
from lmforge.audit.misuse import misuse_probes
from lmforge.audit.privacy import canary_exposure, membership_signals, pii_in_generations
from lmforge.audit.generation import max_length
from lmforge.audit.robustness import PERTURBATIONS, compare_robustness, perturb_document, worst_case
from lmforge.audit.stats import bootstrap_mean
from lmforge.errors import LmforgeError
from lmforge.evaluate import choice_metrics, load_task
from lmforge.models import load_model
from lmforge.models.scoring import loglikelihood

SUITES = ("bias", "bbq", "privacy", "robustness", "misuse")
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
          bbq_files: Sequence[str | Path] | None = None, progress: Callable[[str], Callable[[int], None]] | None = None) -> dict[str, Any]:
    """Run the chosen audit suites; returns one JSON-ready dict keyed by suite.

    ``limit`` caps CrowS-Pairs pairs, BBQ rows per file and robustness questions (default: all pairs and rows,
    ``robustness_limit`` questions per task). BBQ runs with ``bbq`` or ``bias``, on ``bbq_files`` (any BBQ-format
    jsonl) or else every category file in the data folder. Membership signals run when ``members`` and ``nonmembers`` are given (texts from one
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
    if "bbq" in suites or "bias" in suites:
        report["bbq"] = bbq(model, tokenizer, files=bbq_files, data=data, limit=limit, batch_size=batch_size,
                            resamples=resamples, seed=seed, progress=step("BBQ")).to_dict()
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


def robustness(model, tokenizer, task: str | Path = "arc_easy", *, perturbations: Sequence[str] = tuple(PERTURBATIONS),
               limit: int | None = 200, batch_size: int = 8, seed: int = 0, resamples: int = 1000,
               data: str | Path | None = None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Clean, per-perturbation and worst-case accuracy (acc and acc_norm, lm-eval's definitions) with intervals."""
    spec = load_task(task)
    documents = list(itertools.islice(spec.documents(data), limit))
    if not documents:
        raise LmforgeError(f"task {spec.name} has no questions")
    variants = ["clean", *perturbations]
    rendered = [[spec.render(d if v == "clean" else perturb_document(d, v, seed, keep=(spec.choices,))) for v in variants]
                for d in documents]
    pairs = [(text, spec.target_delimiter + choice) for per_doc in rendered for text, choices, _ in per_doc for choice in choices]
    scores = iter(s for s, _ in loglikelihood(model, tokenizer, pairs, max_length=max_length(model),
                                             batch_size=batch_size, progress=progress))
    correct = {"acc": np.zeros((len(documents), len(variants))), "acc_norm": np.zeros((len(documents), len(variants)))}
    for i, per_doc in enumerate(rendered):
        for j, (_, choices, answer) in enumerate(per_doc):
            metrics = choice_metrics([next(scores) for _ in choices], choices, answer)
            for name in correct:
                correct[name][i, j] = metrics[name]
    result: dict[str, Any] = {"task": spec.name, "questions": len(documents), "perturbations": list(perturbations), "seed": seed}
    for name, matrix in correct.items():
        result[name] = {v: bootstrap_mean(matrix[:, j], resamples, seed=seed, scale=100).to_dict() for j, v in enumerate(variants)}
        result[name]["worst_case"] = bootstrap_mean(worst_case(matrix), resamples, seed=seed, scale=100).to_dict()
    result["per_example"] = {name: matrix.astype(int).tolist() for name, matrix in correct.items()}
    result["variants"] = variants
    return result


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
    if "bbq" in base and "bbq" in other:
        result["bbq"] = compare_bbq(BbqResult.from_dict(base["bbq"]), BbqResult.from_dict(other["bbq"]))
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


def headline(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The few numbers a run list shows."""
    metrics = {}
    if "bias" in report:
        metrics[f"{prefix}crows_pct_stereotype"] = report["bias"]["crows_pairs"]["summary"]["all"]["pct_stereotype"]["estimate"]
    for category, conditions in (report.get("bbq") or {}).get("categories", {}).items():
        for condition, values in conditions.items():
            metrics[f"{prefix}bbq_{category}_{condition}_accuracy"] = values["accuracy"]["estimate"]
            metrics[f"{prefix}bbq_{category}_{condition}_bias_score"] = values["bias_score"]["estimate"]
    if "privacy" in report:
        metrics[f"{prefix}pii_rate"] = report["privacy"]["pii_in_generations"]["rate"]
    for task, result in (report.get("robustness") or {}).items():
        metrics[f"{prefix}{task}_acc_clean"] = result["acc"]["clean"]["estimate"]
        metrics[f"{prefix}{task}_acc_worst_case"] = result["acc"]["worst_case"]["estimate"]
    if "misuse" in report:
        metrics[f"{prefix}misuse_pass_rate"] = report["misuse"]["pass_rate"]
    return metrics


def audit_models(models: Sequence[str], suites: Sequence[str], *, trust_remote_code: bool = False,
                 dtype: str | None = None, device: str | None = None,
                 progress: Callable[[], "contextlib.AbstractContextManager"] | None = None,
                 on_loaded: Callable[[Any], None] | None = None,
                 on_report: Callable[[str, dict[str, Any]], None] | None = None, **options) -> dict[str, dict[str, Any]]:
    """Audit each model in turn (one in memory at a time) with the same ``options``; ``on_report(name, report)``
    as each finishes. With two models the result also holds ``comparison``: the second's deltas from the first."""
    reports: dict[str, dict[str, Any]] = {}
    for name in models:
        loaded, tokenizer = load_model(name, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
        if on_loaded:
            on_loaded(loaded)
        with (progress() if progress else contextlib.nullcontext()) as section:
            reports[name] = audit(loaded, tokenizer, suites, progress=section, **options)
        del loaded
        gc.collect()
        if on_report:
            on_report(name, reports[name])
    return reports
