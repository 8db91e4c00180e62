"""Heuristic quality rules with their published thresholds: Gopher quality, Gopher repetition, C4, FineWeb.

Sources
- Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher",
  appendix A.1.1 (quality filters) and table A1 (repetition thresholds).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning" (JMLR 21), section 2.2, and the
  reference implementation in tensorflow_datasets c4_utils (policy lines, 1000-character words).
- FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.3 (custom filters), with the thresholds
  of the released pipeline (datatrove FineWebQualityFilter defaults).
A document is dropped when a ratio passes its threshold strictly, except where the source says "at least"
(noted at each rule), so a document exactly at a threshold is kept by the ``>`` rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from lmforge.data.curate.base import Document, Step
from lmforge.data.curate.text import local_word_hashes, ngram_hashes, split_words, tokens

GOPHER_STOP_WORDS = frozenset(("the", "be", "to", "of", "and", "that", "have", "with"))
_LETTER = re.compile(r"[^\W\d_]")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")


@dataclass
class GopherQuality(Step):
    name = "gopher_quality"
    min_words: int = 50               # "fewer than 50 or more than 100,000 words"
    max_words: int = 100_000
    min_mean_word_length: float = 3   # "mean word length outside the range of 3 to 10 characters"
    max_mean_word_length: float = 10
    max_symbol_word_ratio: float = 0.1  # "symbol-to-word ratio greater than 0.1 for the hash or the ellipsis"
    max_bullet_lines: float = 0.9     # "more than 90% of lines starting with a bullet point"
    max_ellipsis_lines: float = 0.3   # "more than 30% of lines ending with an ellipsis"
    min_alpha_words: float = 0.8      # "80% of words must contain at least one alphabetic character"
    min_stop_words: int = 2           # "at least two of: the, be, to, of, and, that, have, with"

    def process(self, doc: Document):
        text = doc.text
        words = split_words(text)
        n = len(words)
        if n < self.min_words:
            return "too_few_words", f"{n} words"
        if n > self.max_words:
            return "too_many_words", f"{n} words"
        mean_length = sum(map(len, words)) / n
        if mean_length < self.min_mean_word_length:
            return "short_mean_word_length", f"{mean_length:.2f}"
        if mean_length > self.max_mean_word_length:
            return "long_mean_word_length", f"{mean_length:.2f}"
        if text.count("#") / n > self.max_symbol_word_ratio:
            return "hash_ratio", f"{text.count('#') / n:.3f}"
        ellipses = text.count("...") + text.count("…")
        if ellipses / n > self.max_symbol_word_ratio:
            return "ellipsis_ratio", f"{ellipses / n:.3f}"
        lines = text.splitlines() or [""]
        bullets = sum(line.lstrip().startswith(("•", "-", "*", "‣", "◦", "·")) for line in lines) / len(lines)
        if bullets > self.max_bullet_lines:
            return "bullet_lines", f"{bullets:.3f}"
        ellipsis_lines = sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines)
        if ellipsis_lines > self.max_ellipsis_lines:
            return "ellipsis_lines", f"{ellipsis_lines:.3f}"
        alpha = sum(map(bool, map(_LETTER.search, words))) / n
        if alpha < self.min_alpha_words:
            return "alpha_words", f"{alpha:.3f}"
        stop = sum(map(GOPHER_STOP_WORDS.__contains__, map(str.lower, words)))
        if stop < self.min_stop_words:
            return "stop_words", f"{stop}"
        return None


def _duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and how many characters those repeats hold."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _ngram_char_counts(hashes: np.ndarray, cumulative: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram and the number of word characters each covers."""
    grams = ngram_hashes(hashes, n)
    return grams, cumulative[n:n + len(grams)] - cumulative[:len(grams)]


def _top_ngram_chars(hashes: np.ndarray, cumulative: np.ndarray, n: int) -> int:
    """Characters covered by the most frequent n-gram (its length times its count); 0 if none repeats."""
    grams, chars = _ngram_char_counts(hashes, cumulative, n)
    if len(grams) == 0:
        return 0
    _, first, counts = np.unique(grams, return_index=True, return_counts=True)
    top = int(np.argmax(counts))
    return int(chars[first[top]] * counts[top]) if counts[top] > 1 else 0


def _duplicate_ngram_chars(hashes: np.ndarray, cumulative: np.ndarray, n: int) -> int:
    """Characters in repeated occurrences of n-grams, scanning left to right and skipping past each
    counted repeat so overlapping n-grams are not counted twice (Gopher A.1.1)."""
    grams, chars = _ngram_char_counts(hashes, cumulative, n)
    if len(grams) == 0:
        return 0
    _, first, inverse = np.unique(grams, return_index=True, return_inverse=True)
    repeats = np.flatnonzero(first[inverse.reshape(-1)] != np.arange(len(grams)))
    total, next_free = 0, 0
    for i in repeats.tolist():
        if i >= next_free:
            total += int(chars[i])
            next_free = i + n
    return total


@dataclass
class GopherRepetition(Step):
    """Gopher table A1. Line and paragraph fractions are over the text's characters, n-gram fractions over
    the characters of its words (Rae et al. A.1.1)."""

    name = "gopher_repetition"
    max_duplicate_lines: float = 0.30
    max_duplicate_paragraphs: float = 0.30
    max_duplicate_line_chars: float = 0.20
    max_duplicate_paragraph_chars: float = 0.20
    top_ngrams: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    duplicate_ngrams: dict = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})

    def process(self, doc: Document):
        text = doc.text.strip()
        if not text:
            return "empty"
        paragraphs = _PARAGRAPH_BREAK.split(text)
        dup, chars = _duplicates(paragraphs)
        if dup / len(paragraphs) > self.max_duplicate_paragraphs:
            return "duplicate_paragraphs", f"{dup}/{len(paragraphs)}"
        if chars / len(text) > self.max_duplicate_paragraph_chars:
            return "duplicate_paragraph_chars", f"{chars / len(text):.3f}"
        lines = [line for line in text.split("\n") if line.strip()]
        dup, chars = _duplicates(lines)
        if dup / len(lines) > self.max_duplicate_lines:
            return "duplicate_lines", f"{dup}/{len(lines)}"
        if chars / len(text) > self.max_duplicate_line_chars:
            return "duplicate_line_chars", f"{chars / len(text):.3f}"
        words = split_words(text)
        hashes = local_word_hashes(words)
        cumulative = np.concatenate([[0], np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)))])
        word_chars = int(cumulative[-1]) or 1
        for n, limit in self.top_ngrams.items():
            fraction = _top_ngram_chars(hashes, cumulative, int(n)) / word_chars
            if fraction > limit:
                return f"top_{n}gram", f"{fraction:.3f}"
        for n, limit in self.duplicate_ngrams.items():
            fraction = _duplicate_ngram_chars(hashes, cumulative, int(n)) / word_chars
            if fraction > limit:
                return f"duplicate_{n}grams", f"{fraction:.3f}"
        return None


C4_POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(?=\s|$)")
C4_TERMINAL = (".", "!", "?", '"', "'", "”", "’")


@dataclass
class C4Quality(Step):
    """C4's line cleaning and page rules; it rewrites the text to the lines it keeps."""

    name = "c4"
    min_words_per_line: int = 3     # "only retained lines that contained at least 3 words"
    min_sentences: int = 5          # "discarded any page with fewer than 5 sentences"
    max_word_length: int = 1000     # tfds c4_utils: lines with a word over 1000 characters go
    drop_javascript_lines: bool = True
    drop_policy_lines: bool = True
    drop_lorem_ipsum: bool = True
    drop_curly_bracket: bool = True
    remove_citations: bool = True

    def process(self, doc: Document):
        kept, sentences = [], 0
        for line in doc.text.splitlines():
            line = line.strip()
            if not line:
                continue
            words = line.split()
            if any(len(w) > self.max_word_length for w in words):
                self.count("c4_lines_removed", "long_word")
                continue
            if self.remove_citations:
                line = _CITATION.sub("", line)
            if not line.endswith(C4_TERMINAL) or line.endswith(("...", "…")):
                self.count("c4_lines_removed", "no_terminal_punctuation")
                continue
            if len(words) < self.min_words_per_line:
                self.count("c4_lines_removed", "too_few_words")
                continue
            lower = line.lower()
            if self.drop_lorem_ipsum and "lorem ipsum" in lower:
                return "lorem_ipsum"
            if self.drop_javascript_lines and "javascript" in lower:
                self.count("c4_lines_removed", "javascript")
                continue
            if self.drop_curly_bracket and "{" in line:
                return "curly_bracket"
            if self.drop_policy_lines and any(p in lower for p in C4_POLICY_PHRASES):
                self.count("c4_lines_removed", "policy")
                continue
            sentences += max(1, len(_SENTENCE_END.findall(line)))
            kept.append(line)
        if sentences < self.min_sentences:
            return "too_few_sentences", f"{sentences}"
        doc.text = "\n".join(kept)
        return None


FINEWEB_TERMINAL = (".", "'", '"', "!", "?")


@dataclass
class FineWebQuality(Step):
    name = "fineweb"
    # "fraction of lines ending with punctuation ≤ 0.12" drops the document (an "at most" rule).
    min_punctuated_lines: float = 0.12
    # "fraction of characters in duplicated lines ≥ 0.1" in the paper; the released pipeline used 0.01.
    max_duplicate_line_chars: float = 0.01
    # "fraction of lines shorter than 30 characters ≥ 0.67" drops the document.
    max_short_lines: float = 0.67
    short_line_length: int = 30
    # list-like pages: more than 0.3 newlines per word.
    max_newlines_per_word: float = 0.3

    def process(self, doc: Document):
        text = doc.text
        lines = text.split("\n")
        punctuated = sum(line.endswith(FINEWEB_TERMINAL) for line in lines) / len(lines)
        if punctuated <= self.min_punctuated_lines:
            return "punctuated_lines", f"{punctuated:.3f}"
        short = sum(len(line) <= self.short_line_length for line in lines) / len(lines)
        if short >= self.max_short_lines:
            return "short_lines", f"{short:.3f}"
        _, chars = _duplicates([line for line in lines if line.strip()])
        fraction = chars / max(1, len(text) - text.count("\n"))
        if fraction >= self.max_duplicate_line_chars:
            return "duplicate_line_chars", f"{fraction:.4f}"
        words = tokens(text)
        ratio = text.count("\n") / max(1, len(words))
        if ratio > self.max_newlines_per_word:
            return "list_like", f"{ratio:.3f}"
        return None
