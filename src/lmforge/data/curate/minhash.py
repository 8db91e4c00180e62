"""MinHash signatures and LSH banding for near-duplicate detection (Broder 1997; Leskovec et al., MMDS ch. 3).

A document is the set of its word n-grams (shingles). For each of ``bands * rows`` random hash functions
h_i, the signature keeps min over shingles of h_i(shingle); two documents agree at position i with
probability equal to their Jaccard similarity s. Banding the signature into ``bands`` blocks of ``rows``
makes two documents candidates when any whole block agrees, which happens with probability
1 - (1 - s^rows)^bands: an S-curve whose midpoint is about (1/bands)^(1/rows) (0.72 for 14 x 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmforge.data.curate.text import hash_words, mix64, ngram_hashes, normalized_words

_MAX = np.iinfo(np.uint64).max
_CHUNK = 4096  # shingles per block, so one long page never allocates more than CHUNK x num_perm words


@dataclass
class MinHasher:
    bands: int = 14
    rows: int = 8
    ngram: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        # Hash function i is a_i * mix(x) + b_i mod 2^64 with odd a_i: a bijection on 64-bit words. The min
        # is decided by the high bits, which the multiplication mixes from every input bit.
        self._a = rng.integers(0, _MAX, size=self.num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
        self._b = rng.integers(0, _MAX, size=self.num_perm, dtype=np.uint64, endpoint=True)
        self._band_weights = rng.integers(0, _MAX, size=self.rows, dtype=np.uint64, endpoint=True) | np.uint64(1)

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    def shingles(self, text: str) -> np.ndarray:
        """Hashed word n-grams (repeats are harmless to a minimum); a text shorter than n words is one
        shingle of all its words."""
        hashes = hash_words(normalized_words(text))
        if len(hashes) == 0:
            return hashes
        return ngram_hashes(hashes, min(self.ngram, len(hashes)))

    def signature_of(self, shingles: np.ndarray) -> np.ndarray:
        signature = np.full(self.num_perm, _MAX, dtype=np.uint64)
        mixed = mix64(shingles)  # full avalanche once per shingle; the per-function step is then affine
        for start in range(0, len(mixed), _CHUNK):
            values = mixed[start:start + _CHUNK, None] * self._a
            values += self._b  # in place: one (shingles x functions) buffer, not two
            np.minimum(signature, values.min(axis=0), out=signature)
        return signature

    def signature(self, text: str) -> np.ndarray:
        return self.signature_of(self.shingles(text))

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """One 64-bit key per (document, band): equal keys mean the whole band agrees (up to 2^-64 collisions)."""
        blocks = signatures.reshape(len(signatures), self.bands, self.rows)
        return mix64((blocks * self._band_weights).sum(axis=2, dtype=np.uint64))

    def candidate_pairs(self, signatures: np.ndarray) -> set[tuple[int, int]]:
        """Pairs (i < j) that share at least one band: the LSH candidates, before any verification."""
        pairs: set[tuple[int, int]] = set()
        for group in self._band_groups(signatures):
            pairs.update((int(i), int(j)) for k, i in enumerate(group) for j in group[k + 1:])
        return pairs

    def _band_groups(self, signatures: np.ndarray):
        """Per band, the groups (sorted index arrays, size > 1) of documents whose band keys are equal."""
        keys = self.band_keys(signatures)
        for band in range(self.bands):
            column = keys[:, band]
            order = np.argsort(column, kind="stable")
            sorted_keys = column[order]
            boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
            for group in np.split(order, boundaries):
                if len(group) > 1:
                    yield np.sort(group)

    def clusters(self, signatures: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """A cluster label per document (the smallest index in its cluster), by union-find over band matches.

        With ``threshold``, a band match joins two documents only if their signatures agree on at least
        that fraction of positions (the MinHash estimate of their Jaccard similarity).
        """
        parent = np.arange(len(signatures))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for group in self._band_groups(signatures):
            head = group[0]
            for other in group[1:]:
                if threshold is not None and np.mean(signatures[head] == signatures[other]) < threshold:
                    continue
                a, b = find(head), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        return np.array([find(i) for i in range(len(signatures))], dtype=np.int64)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """The LSH S-curve: the chance that two documents of Jaccard ``similarity`` share a band."""
    return 1.0 - (1.0 - similarity ** rows) ** bands
