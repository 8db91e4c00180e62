"""Exact and near-duplicate removal across all shards; the first document of a group (in shard order) stays."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import xxhash

from lmforge.data.curate.base import Document, GlobalStep
from lmforge.data.curate.minhash import MinHasher
from lmforge.data.curate.text import normalized_words


def _flatten(ids: list[list[str]], rows: list[np.ndarray]) -> tuple[list[str], np.ndarray, list[tuple[int, int]]]:
    """Concatenate per-shard rows in shard order; remember (shard, index) of each."""
    flat_ids = [i for shard in ids for i in shard]
    where = [(s, k) for s, shard in enumerate(ids) for k in range(len(shard))]
    stacked = np.concatenate([r for r in rows if len(r)]) if any(len(r) for r in rows) else np.empty((0,))
    return flat_ids, stacked, where


def _drops_from_labels(labels: np.ndarray, ids: list[list[str]], flat_ids: list[str], where, reason: str):
    drops: list[dict[int, tuple[str, str]]] = [{} for _ in ids]
    for position, label in enumerate(labels):
        if label != position:
            shard, index = where[position]
            drops[shard][index] = (reason, f"duplicate of {flat_ids[label]}")
    return drops


def _count_clusters(step: GlobalStep, labels: np.ndarray) -> None:
    """Histogram of duplicate-group sizes (groups of one are not duplicates) for the data card."""
    sizes = Counter(np.bincount(labels)[np.unique(labels)].tolist())
    for size, count in sorted(sizes.items()):
        if size > 1:
            step.count("duplicate_cluster_sizes", str(size), count)


@dataclass
class ExactDedup(GlobalStep):
    """Drop documents whose normalized text (lower case, words only) was seen before."""

    name = "exact_dedup"

    def signature(self, doc: Document) -> np.ndarray:
        digest = xxhash.xxh3_128_digest(" ".join(normalized_words(doc.text)).encode())
        return np.frombuffer(digest, dtype=np.uint64)

    def decide(self, ids: list[list[str]], signatures: list[np.ndarray]) -> list[dict[int, tuple[str, str]]]:
        flat_ids, keys, where = _flatten(ids, signatures)
        if not flat_ids:
            return [{} for _ in ids]
        _, first, inverse = np.unique(keys.reshape(len(flat_ids), 2), axis=0, return_index=True, return_inverse=True)
        labels = first[inverse.reshape(-1)]
        _count_clusters(self, labels)
        return _drops_from_labels(labels, ids, flat_ids, where, "exact_duplicate")


@dataclass
class MinHashDedup(GlobalStep):
    """Near-duplicates by MinHash LSH over word n-grams (defaults: 5-grams, 14 bands x 8 rows).

    ``threshold`` (optional) confirms each band match by the estimated Jaccard of the two signatures,
    trading a little recall near the threshold for precision.
    """

    name = "minhash_dedup"
    bands: int = 14
    rows: int = 8
    ngram: int = 5
    seed: int = 0
    threshold: float | None = None

    def __post_init__(self) -> None:
        for option in ("bands", "rows", "ngram"):
            if getattr(self, option) < 1:
                raise ValueError(f"{option} must be at least 1 (got {getattr(self, option)})")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be within [0, 1] (got {self.threshold})")

    def setup(self) -> None:
        self._hasher = MinHasher(self.bands, self.rows, self.ngram, self.seed)

    def signature(self, doc: Document) -> np.ndarray:
        return self._hasher.signature(doc.text)

    def decide(self, ids: list[list[str]], signatures: list[np.ndarray]) -> list[dict[int, tuple[str, str]]]:
        self.setup()
        flat_ids, stacked, where = _flatten(ids, signatures)
        if not flat_ids:
            return [{} for _ in ids]
        labels = self._hasher.clusters(stacked.reshape(len(flat_ids), -1), self.threshold)
        _count_clusters(self, labels)
        return _drops_from_labels(labels, ids, flat_ids, where, "near_duplicate")
