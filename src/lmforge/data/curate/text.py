"""Shared text primitives for the rules and the dedup steps: word splitting and hashed word n-grams."""

from __future__ import annotations

import re

import numpy as np
import xxhash

# Words as the quality rules count them: letters/digits with inner hyphens or apostrophes; every other
# non-space character is a punctuation token of its own (close to NLTK's word_tokenize, without its cost).
_WORD = r"\w+(?:['’\-]\w+)*"
_TOKEN = re.compile(_WORD + r"|[^\w\s]")
_WORD_ONLY = re.compile(_WORD)
_NORMALIZED_WORD = re.compile(r"\w+")
_PRIME = np.uint64(0x100000001B3)  # FNV-64 prime: mixes a word hash into the running n-gram hash


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def split_words(text: str) -> list[str]:
    """The tokens that are words (``tokens`` without the punctuation marks)."""
    return _WORD_ONLY.findall(text)


def normalized_words(text: str) -> list[str]:
    """Lower-cased words without punctuation: the unit of dedup and decontamination n-grams."""
    return _NORMALIZED_WORD.findall(text.lower())


def hash_words(words: list[str]) -> np.ndarray:
    """A stable 64-bit hash per word (xxh3; Python's ``hash`` changes between processes)."""
    return np.fromiter((xxhash.xxh3_64_intdigest(w.encode()) for w in words), dtype=np.uint64, count=len(words))


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: spreads every input bit over the whole 64-bit output."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def local_word_hashes(words: list[str]) -> np.ndarray:
    """Word hashes that are only comparable within one call (a dictionary id per distinct word, mixed):
    several times cheaper than ``hash_words`` where only equality inside one document matters."""
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(w, len(index)) for w in words), dtype=np.uint64, count=len(words))
    return mix64(ids + np.uint64(1))


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hashes of every run of ``n`` consecutive words (order-sensitive polynomial mix, vectorized)."""
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    out = word_hashes[:count].copy()
    for k in range(1, n):
        out = out * _PRIME ^ word_hashes[k:k + count]
    return out


def hash_text(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text.encode())
