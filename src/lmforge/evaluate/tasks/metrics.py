"""lm-eval's per-document metrics and their aggregations (same names, same formulas).

Per document: ``acc`` / ``acc_norm`` / ``acc_bytes`` pick the choice with the
highest log-likelihood (raw, per character, per UTF-8 byte); ``exact_match``
compares strings after lm-eval's ``regexes_to_ignore`` / ``ignore_case`` /
``ignore_punctuation`` / ``ignore_numbers``; ``perplexity`` items are
log-likelihoods and ``word_perplexity`` / ``byte_perplexity`` /
``bits_per_byte`` items are (log-likelihood, words or bytes) pairs.
Aggregations: mean, perplexity = exp(-mean ll), weighted_perplexity =
exp(-Σll/Σn), bits_per_byte = -Σll/Σbytes/ln 2.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, Callable, Sequence

from lmforge.errors import LmforgeError

DEFAULT_METRICS = {
    "multiple_choice": ["acc", "acc_norm"],
    "loglikelihood": ["perplexity", "acc"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
    "generate_until": ["exact_match"],
}
SUPPORTED = {
    "multiple_choice": {"acc", "acc_norm", "acc_bytes", "exact_match"},
    "loglikelihood": {"perplexity", "acc"},
    "loglikelihood_rolling": {"word_perplexity", "byte_perplexity", "bits_per_byte"},
    "generate_until": {"exact_match"},
}
HIGHER_IS_BETTER = {"perplexity": False, "word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False}


def mean(items: Sequence[float]) -> float:
    return sum(items) / len(items)


def weighted_mean(items: Sequence[tuple[float, float]]) -> float:
    return sum(a for a, _ in items) / sum(b for _, b in items)


AGGREGATIONS: dict[str, Callable[[list], float]] = {
    "mean": mean,
    "perplexity": lambda items: math.exp(-mean(items)),
    "weighted_perplexity": lambda items: math.exp(-weighted_mean(items)),
    "bits_per_byte": lambda items: -weighted_mean(items) / math.log(2),
}
DEFAULT_AGGREGATION = {"perplexity": "perplexity", "word_perplexity": "weighted_perplexity",
                       "byte_perplexity": "weighted_perplexity", "bits_per_byte": "bits_per_byte"}


def mean_stderr(items: Sequence[float]) -> float | None:
    """Sample standard deviation / sqrt(n), lm-eval's stderr of a mean (None below two items)."""
    if len(items) < 2:
        return None
    mu = mean(items)
    return math.sqrt(sum((x - mu) ** 2 for x in items) / (len(items) - 1) / len(items))


def exact_match(prediction: str, reference: str, regexes_to_ignore: Sequence[str] | None = None,
                ignore_case: bool = False, ignore_punctuation: bool = False, ignore_numbers: bool = False) -> float:
    for pattern in regexes_to_ignore or ():
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        prediction, reference = prediction.translate(table), reference.translate(table)
    if ignore_numbers:
        table = str.maketrans("", "", string.digits)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return float(prediction == reference)


def _argmax(values: Sequence[float]) -> int:
    """First index of the maximum (numpy's argmax, which lm-eval uses: ties go to the earliest choice)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def choice_scores(lls: Sequence[float], greedy: Sequence[bool], choices: Sequence[str], gold: int | list[int]) -> dict[str, float]:
    """acc, acc_norm, acc_bytes and exact_match of one multiple-choice document."""
    picks = {"acc": _argmax(lls),
             "acc_norm": _argmax([ll / len(c) for ll, c in zip(lls, choices)]),
             "acc_bytes": _argmax([ll / len(c.encode("utf-8")) for ll, c in zip(lls, choices)])}
    golds = gold if isinstance(gold, list) else [gold]
    scores = {name: float(pick in golds) for name, pick in picks.items()}
    scores["exact_match"] = float(any(greedy[g] for g in golds if g != -100))
    return scores


def metric_specs(config) -> list[dict[str, Any]]:
    """The task's metric_list (or lm-eval's default for its output type), checked against what lmforge computes."""
    specs = config.metric_list or [{"metric": m} for m in DEFAULT_METRICS[config.output_type]]
    if config.process_results is None:
        for spec in specs:
            if spec["metric"] not in SUPPORTED[config.output_type]:
                raise LmforgeError(f"task {config.task}: metric '{spec['metric']}' is not supported for output_type "
                                   f"{config.output_type} (supported: {', '.join(sorted(SUPPORTED[config.output_type]))}; "
                                   "other metrics need a trusted process_results)")
    return specs


def aggregation_for(spec: dict[str, Any], trust: bool, task: str) -> Callable[[list], float]:
    from lmforge.evaluate.tasks.config import FunctionRef

    name = spec.get("aggregation") or DEFAULT_AGGREGATION.get(spec["metric"], "mean")
    if isinstance(name, FunctionRef):
        return name.load(trust)
    if name not in AGGREGATIONS:
        raise LmforgeError(f"task {task}: aggregation '{name}' is not supported ({', '.join(AGGREGATIONS)})")
    return AGGREGATIONS[name]
