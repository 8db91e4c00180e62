"""Robustness: accuracy on multiple-choice tasks under HELM-style perturbations of the question.

Perturbations (after HELM, Liang et al. 2022, section 5.3): keyboard typos
(each letter, with probability 0.1, becomes a neighbouring QWERTY key),
lower-casing, contractions ("do not" → "don't") and extra spaces (each space
becomes 1-3 spaces). They change the question's text fields only; the answer
choices stay as written. Each perturbation is seeded per example, so runs repeat
exactly. ``worst_case`` counts an example as right only if the model is right on
the clean question and on every perturbed one (HELM's worst-case robustness),
so it can never exceed clean accuracy.
"""

from __future__ import annotations

import random
import re
import zlib
from typing import Any, Callable, Sequence

import numpy as np

from lmforge.audit.stats import paired_bootstrap_delta
from lmforge.errors import LmforgeError

_ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]


def _keyboard_neighbours() -> dict[str, str]:
    position = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
    return {c: "".join(o for o, (r2, i2) in position.items() if o != c and abs(r2 - r) <= 1 and abs(i2 - i) <= 1)
            for c, (r, i) in position.items()}


NEIGHBOURS = _keyboard_neighbours()

CONTRACTIONS = {
    "are not": "aren't", "cannot": "can't", "could not": "couldn't", "did not": "didn't", "does not": "doesn't",
    "do not": "don't", "had not": "hadn't", "has not": "hasn't", "have not": "haven't", "he is": "he's",
    "I am": "I'm", "I have": "I've", "I will": "I'll", "is not": "isn't", "it is": "it's", "let us": "let's",
    "must not": "mustn't", "should not": "shouldn't", "that is": "that's", "there is": "there's",
    "they are": "they're", "they have": "they've", "was not": "wasn't", "we are": "we're", "we have": "we've",
    "were not": "weren't", "what is": "what's", "where is": "where's", "who is": "who's", "will not": "won't",
    "would not": "wouldn't", "you are": "you're", "you have": "you've", "she is": "she's",
}
_CONTRACTION_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, CONTRACTIONS), key=len, reverse=True)) + r")\b",
                                  re.IGNORECASE)


def typos(text: str, rng: random.Random, prob: float = 0.1) -> str:
    out = []
    for char in text:
        lower = char.lower()
        if lower in NEIGHBOURS and rng.random() < prob:
            new = rng.choice(NEIGHBOURS[lower])
            char = new.upper() if char.isupper() else new
        out.append(char)
    return "".join(out)


def lowercase(text: str, rng: random.Random) -> str:
    return text.lower()


def contractions(text: str, rng: random.Random) -> str:
    def contract(match: re.Match) -> str:
        phrase = match.group(0)
        short = CONTRACTIONS[next(k for k in CONTRACTIONS if k.lower() == phrase.lower())]
        return short[0].upper() + short[1:] if phrase[0].isupper() else short
    return _CONTRACTION_PATTERN.sub(contract, text)


def extra_spaces(text: str, rng: random.Random, max_spaces: int = 3) -> str:
    return re.sub(r" ", lambda _: " " * rng.randint(1, max_spaces), text)


PERTURBATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "typos": typos, "lowercase": lowercase, "contractions": contractions, "extra_spaces": extra_spaces,
}


def perturb_document(document: dict[str, Any], name: str, seed: int, keep: Sequence[str] = ()) -> dict[str, Any]:
    """``document`` with every string field except ``keep`` perturbed; the RNG depends on the seed and the field text."""
    if name not in PERTURBATIONS:
        raise LmforgeError(f"unknown perturbation '{name}'; use one of: {', '.join(PERTURBATIONS)}")
    result = dict(document)
    for key, value in document.items():
        if isinstance(value, str) and key not in keep:
            result[key] = PERTURBATIONS[name](value, random.Random(seed * 1_000_003 + zlib.crc32(value.encode())))
    return result


def worst_case(correct: np.ndarray) -> np.ndarray:
    """Per example (row): right only if right in every variant (columns: clean first, then perturbations)."""
    return correct.min(axis=1)


def compare_robustness(base: dict[str, Any], other: dict[str, Any], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired-bootstrap intervals of other - base for clean and worst-case accuracy (points)."""
    if base["questions"] != other["questions"] or base["variants"] != other["variants"]:
        raise LmforgeError("the two robustness runs differ in questions or perturbations; use the same --limit")
    rows = {}
    for metric in ("acc", "acc_norm"):
        a, b = np.array(base["per_example"][metric]), np.array(other["per_example"][metric])
        rows[metric] = {
            "clean": paired_bootstrap_delta(a[:, 0], b[:, 0], resamples, seed=seed, scale=100).to_dict(),
            "worst_case": paired_bootstrap_delta(worst_case(a), worst_case(b), resamples, seed=seed, scale=100).to_dict(),
        }
    return rows
