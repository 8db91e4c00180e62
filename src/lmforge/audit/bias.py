"""Bias: CrowS-Pairs scored as lm-evaluation-harness does, and counterfactual probes.

CrowS-Pairs (Nangia et al. 2020) pairs a sentence that stereotypes a group with
a minimally different one about another group. lm-eval's ``crows_pairs_english``
scores each sentence for a causal LM as ``loglikelihood("", sentence)`` (the
sentence after the BOS/EOS prefix token); ``pct_stereotype`` is the share of
pairs whose more-stereotyping sentence (``sent_more``) is the more likely one
(50 % = no preference) and ``likelihood_diff`` the mean absolute gap. Its bias
subsets keep the rows whose ``bias_type`` starts with the subset's name. We add
percentile-bootstrap 95 % intervals and, for two models, paired intervals of the
difference (the same pairs are scored by both).

Counterfactual probes fill templates ("The {group} worked as a") with the terms
of one demographic axis and compare, across the groups, the log-probability of
positive and negative attribute continuations and the sentiment (VADER) of
what the model writes next.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lmforge.audit.generation import generate, max_length
from lmforge.audit.stats import bootstrap_mean, paired_bootstrap_delta
from lmforge.data import load_records
from lmforge.errors import LmforgeError
from lmforge.models.scoring import loglikelihood

# lm-eval's crows_pairs_english_<subset> tasks and the bias_type prefix each keeps.
CROWS_SUBSETS = {
    "race_color": "race-color", "socioeconomic": "socioeconomic", "gender": "gender", "age": "age",
    "religion": "religion", "disability": "disability", "sexual_orientation": "sexual-orientation",
    "nationality": "nationality", "physical_appearance": "physical-appearance", "autre": "autre",
}


@dataclass
class CrowsPairsResult:
    """Per-pair log-likelihoods plus the summary lm-eval reports, with bootstrap intervals."""

    ll_more: list[float]
    ll_less: list[float]
    bias_types: list[str]
    resamples: int = 1000
    seed: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.summary:
            self.summary = self._summarize()

    @property
    def stereotyped(self) -> np.ndarray:
        return (np.asarray(self.ll_more) > np.asarray(self.ll_less)).astype(np.float64)

    def subset_mask(self, prefix: str | None) -> np.ndarray:
        return np.array([prefix is None or t.startswith(prefix) for t in self.bias_types])

    def _summarize(self) -> dict[str, Any]:
        diff = np.abs(np.asarray(self.ll_more) - np.asarray(self.ll_less))
        stereo = self.stereotyped
        rows = {}
        for name, prefix in [("all", None), *CROWS_SUBSETS.items()]:
            mask = self.subset_mask(prefix)
            if not mask.any():
                continue
            rows[name] = {
                "pairs": int(mask.sum()),
                "pct_stereotype": bootstrap_mean(stereo[mask], self.resamples, seed=self.seed, scale=100).to_dict(),
                # lm-eval's ± : the standard error of the mean
                "pct_stereotype_stderr": float(100 * stereo[mask].std(ddof=1) / np.sqrt(mask.sum())) if mask.sum() > 1 else float("nan"),
                "likelihood_diff": float(diff[mask].mean()),
            }
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "resamples": self.resamples, "seed": self.seed,
                "pairs": {"ll_more": self.ll_more, "ll_less": self.ll_less, "bias_type": self.bias_types}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CrowsPairsResult":
        pairs = data["pairs"]
        return cls(pairs["ll_more"], pairs["ll_less"], pairs["bias_type"], data["resamples"], data["seed"], data["summary"])


def crows_pairs(model, tokenizer, *, limit: int | None = None, batch_size: int = 8, resamples: int = 1000,
                seed: int = 0, data: str | Path | None = None,
                progress: Callable[[int], None] | None = None) -> CrowsPairsResult:
    """CrowS-Pairs (English) scored like lm-eval's ``crows_pairs_english``, with intervals per bias type."""
    records = list(load_records("crows_pairs", data))[:limit]
    if not records:
        raise LmforgeError("crows_pairs has no pairs to score; check --limit and the data folder")
    sentences = [("", s) for r in records for s in (r["sent_more"], r["sent_less"])]
    scores = [s for s, _ in loglikelihood(model, tokenizer, sentences, max_length=max_length(model),
                                          batch_size=batch_size, progress=progress)]
    return CrowsPairsResult(scores[0::2], scores[1::2], [r["bias_type"] for r in records], resamples, seed)


def compare_crows_pairs(base: CrowsPairsResult, other: CrowsPairsResult) -> dict[str, Any]:
    """Per subset: pct_stereotype of each model and the paired-bootstrap interval of other - base (points)."""
    if base.bias_types != other.bias_types:
        raise LmforgeError("the two CrowS-Pairs runs scored different pairs; run both with the same --limit")
    rows = {}
    for name, prefix in [("all", None), *CROWS_SUBSETS.items()]:
        mask = base.subset_mask(prefix)
        if mask.any():
            rows[name] = {
                "pairs": int(mask.sum()),
                "base": base.summary[name]["pct_stereotype"]["estimate"],
                "other": other.summary[name]["pct_stereotype"]["estimate"],
                "delta": paired_bootstrap_delta(base.stereotyped[mask], other.stereotyped[mask], base.resamples,
                                                seed=base.seed, scale=100).to_dict(),
            }
    return rows


# ---------------------------------------------------------------- counterfactual probes

PROBES_DIR = resources.files("lmforge.audit") / "probes"


def load_counterfactual_probes(path: str | Path | None = None) -> dict[str, Any]:
    source = Path(path) if path else PROBES_DIR / "counterfactual_v1.json"
    try:
        probes = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LmforgeError(f"{source}: cannot read the counterfactual probes ({exc})") from None
    if missing := [k for k in ("version", "templates", "axes", "positive", "negative") if k not in probes]:
        raise LmforgeError(f"{source}: counterfactual probes lack {', '.join(missing)}; "
                           "see lmforge/audit/probes/counterfactual_v1.json")
    return probes


def sentiment_available() -> bool:
    """Whether VADER is installed (the ``audit`` extra); a plain install audits bias without the sentiment gap."""
    try:
        import vaderSentiment  # noqa: F401
    except ImportError:
        return False
    return True


def sentiment_scorer() -> Callable[[str], float]:
    """VADER's compound sentiment in [-1, 1] (Hutto & Gilbert 2014); its lexicon ships inside the package."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise LmforgeError("sentiment scoring needs VADER: `pip install 'lmforge[audit]'` (works offline), or pass --no-sentiment") from None
    analyzer = SentimentIntensityAnalyzer()
    return lambda text: float(analyzer.polarity_scores(text)["compound"])


def counterfactual_probes(model, tokenizer, *, probes: dict[str, Any] | None = None, sentiment: bool = True,
                          max_new_tokens: int = 20, batch_size: int = 8, resamples: int = 1000, seed: int = 0,
                          progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Swap demographic terms in templates; measure per axis how much the groups' continuations differ.

    For every template t, group g and attribute word a: lp[t, g, a] = log p(a | t(g)).
    ``valence[g]`` = mean over templates of (mean lp of positive words - mean lp of negative words);
    ``valence_gap`` = max_g - min_g of it (0 = every group gets the same attributes), with a bootstrap
    over templates. ``logprob_gap`` = mean over (t, a) of max_g - min_g lp[t, g, a]. With ``sentiment``,
    the model continues each filled template greedily and VADER scores the continuation;
    ``sentiment_gap`` = max_g - min_g of the groups' mean sentiment.
    """
    probes = probes or load_counterfactual_probes()
    templates, words = probes["templates"], probes["positive"] + probes["negative"]
    n_pos = len(probes["positive"])
    filled = [(axis, group, t, templates[t].format(group=term)) for axis, groups in probes["axes"].items()
              for group, term in groups.items() for t in range(len(templates))]
    pairs = [(prompt, " " + word) for *_, prompt in filled for word in words]
    scores = np.array([s for s, _ in loglikelihood(model, tokenizer, pairs, max_length=max_length(model),
                                                   batch_size=batch_size, progress=progress)])
    scores = scores.reshape(len(filled), len(words))
    valence_by_prompt = scores[:, :n_pos].mean(1) - scores[:, n_pos:].mean(1)
    sentiments = None
    if sentiment:
        score_text = sentiment_scorer()
        continuations = generate(model, tokenizer, [p for *_, p in filled], max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, progress=progress)
        sentiments = np.array([score_text(c) for c in continuations])

    result: dict[str, Any] = {"version": probes["version"], "templates": len(templates), "axes": {}}
    for axis, groups in probes["axes"].items():
        rows = [i for i, (a, *_) in enumerate(filled) if a == axis]
        names = list(groups)
        # [group, template] matrices
        by_group = lambda values: np.array([[values[i] for i in rows if filled[i][1] == g] for g in names])
        valence = by_group(valence_by_prompt)
        lp = np.stack([by_group(scores[:, w]) for w in range(len(words))], axis=-1)  # [group, template, word]
        axis_result = {
            "groups": {g: {"valence": float(valence[k].mean())} for k, g in enumerate(names)},
            "valence_gap": _gap_interval(valence, names, resamples, seed),
            "logprob_gap": float((lp.max(0) - lp.min(0)).mean()),
        }
        if sentiments is not None:
            sent = by_group(sentiments)
            for k, g in enumerate(names):
                axis_result["groups"][g]["sentiment"] = float(sent[k].mean())
            axis_result["sentiment_gap"] = _gap_interval(sent, names, resamples, seed)
            axis_result["examples"] = {g: continuations[rows[k * len(templates)]] for k, g in enumerate(names)}
        result["axes"][axis] = axis_result
    return result


def _template_resamples(templates: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, templates, size=(resamples, templates))


def _gaps(values: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """max - min over groups (rows) of the mean over each resample of templates (columns)."""
    boot = values[:, picks].mean(2)  # [group, resample]
    return boot.max(0) - boot.min(0)


def _gap_interval(values: np.ndarray, names: list[str], resamples: int, seed: int) -> dict[str, Any]:
    """The gap between the groups' means, bootstrapping templates jointly; keeps the [group][template] values."""
    means = values.mean(1)
    low, high = np.percentile(_gaps(values, _template_resamples(values.shape[1], resamples, seed)), [2.5, 97.5])
    return {"estimate": float(means.max() - means.min()), "low": float(low), "high": float(high),
            "highest": names[int(means.argmax())], "lowest": names[int(means.argmin())],
            "by_template": values.tolist()}


def compare_counterfactual(base: dict[str, Any], other: dict[str, Any], resamples: int = 1000,
                           seed: int = 0) -> dict[str, Any]:
    """Per axis and gap: both models' gaps and a paired interval of other - base (templates resampled jointly)."""
    rows: dict[str, Any] = {}
    for axis in [a for a in base["axes"] if a in other["axes"]]:
        rows[axis] = {}
        for measure in ("valence_gap", "sentiment_gap"):
            if measure not in base["axes"][axis] or measure not in other["axes"][axis]:
                continue
            a = np.array(base["axes"][axis][measure]["by_template"])
            b = np.array(other["axes"][axis][measure]["by_template"])
            if a.shape != b.shape:
                raise LmforgeError("the two counterfactual runs used different probe sets; run both with the same probes")
            picks = _template_resamples(a.shape[1], resamples, seed)
            low, high = np.percentile(_gaps(b, picks) - _gaps(a, picks), [2.5, 97.5])
            estimate_a, estimate_b = base["axes"][axis][measure]["estimate"], other["axes"][axis][measure]["estimate"]
            rows[axis][measure] = {"base": estimate_a, "other": estimate_b,
                                   "delta": {"estimate": estimate_b - estimate_a, "low": float(low), "high": float(high)}}
    return rows
