import math

import numpy as np

from lmforge.data.curate import Document, ExactDedup, MinHashDedup, MinHasher, candidate_probability, estimated_jaccard
from lmforge.data.curate.text import hash_words, ngram_hashes, normalized_words


def pair_with_jaccard(rng, similarity, size=400):
    """Two sets of random 64-bit shingles whose Jaccard similarity is exactly ``similarity`` (rounded)."""
    union = size
    common = round(similarity * union)
    only = (union - common) // 2
    pool = rng.integers(0, 2**63, size=common + 2 * only, dtype=np.uint64)
    a = np.concatenate([pool[:common], pool[common:common + only]])
    b = np.concatenate([pool[:common], pool[common + only:]])
    exact = common / (common + 2 * only)
    return a, b, exact


def test_minhash_estimate_matches_exact_jaccard():
    hasher = MinHasher()
    rng = np.random.default_rng(0)
    errors = []
    for similarity in (0.1, 0.3, 0.5, 0.7, 0.9):
        for _ in range(20):
            a, b, exact = pair_with_jaccard(rng, similarity)
            estimate = estimated_jaccard(hasher.signature_of(a), hasher.signature_of(b))
            sigma = math.sqrt(exact * (1 - exact) / hasher.num_perm)
            assert abs(estimate - exact) <= 4.5 * sigma + 1e-9
            errors.append(estimate - exact)
    assert abs(np.mean(errors)) < 0.01  # unbiased


def test_minhash_on_text_matches_exact_shingle_jaccard():
    hasher = MinHasher(ngram=5)
    words = [f"word{i}" for i in range(300)]
    a = " ".join(words)
    b = " ".join(words[:200] + [f"other{i}" for i in range(100)])
    shingles = [set(ngram_hashes(hash_words(normalized_words(t)), 5).tolist()) for t in (a, b)]
    exact = len(shingles[0] & shingles[1]) / len(shingles[0] | shingles[1])
    assert abs(estimated_jaccard(hasher.signature(a), hasher.signature(b)) - exact) < 0.15
    assert np.array_equal(hasher.signature(a), MinHasher(ngram=5).signature(a))  # deterministic across instances


def test_lsh_candidate_rate_follows_s_curve():
    hasher = MinHasher(bands=14, rows=8)
    rng = np.random.default_rng(1)
    pairs = 250
    for similarity in (0.4, 0.6, 0.7, 0.8, 0.9):
        signatures = []
        for _ in range(pairs):
            a, b, _ = pair_with_jaccard(rng, similarity, size=200)
            signatures += [hasher.signature_of(a), hasher.signature_of(b)]
        keys = hasher.band_keys(np.stack(signatures))
        rate = np.mean([(keys[2 * i] == keys[2 * i + 1]).any() for i in range(pairs)])
        expected = candidate_probability(similarity, 14, 8)
        sigma = math.sqrt(max(expected * (1 - expected), 1e-4) / pairs)
        assert abs(rate - expected) <= 4 * sigma + 0.02, (similarity, rate, expected)


def test_clusters_match_brute_force_components():
    hasher = MinHasher(bands=4, rows=2)  # loose bands so that many pairs collide
    rng = np.random.default_rng(2)
    signatures = np.stack([hasher.signature_of(rng.integers(0, 40, size=12, dtype=np.uint64)) for _ in range(60)])
    labels = hasher.clusters(signatures)
    # brute force: i and j are linked when any band agrees in full; clusters are connected components
    bands = signatures.reshape(60, 4, 2)
    parent = list(range(60))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(60):
        for j in range(i + 1, 60):
            if any(np.array_equal(bands[i, b], bands[j, b]) for b in range(4)):
                parent[find(j)] = find(i)
    reference = {}
    for i in range(60):
        reference.setdefault(find(i), []).append(i)
    ours = {}
    for i, label in enumerate(labels):
        ours.setdefault(int(label), []).append(i)
    assert sorted(reference.values()) == sorted(ours.values())
    assert all(label == min(members) for label, members in ours.items())


def test_near_dedup_step_keeps_first_of_each_cluster():
    step = MinHashDedup()
    step.setup()
    base = " ".join(f"token{i}" for i in range(200))
    near = base.replace("token50 ", "changed ")      # one word of 200 changed: Jaccard ~0.95
    other = " ".join(f"other{i}" for i in range(200))
    shards = [[Document("a", base), Document("b", other)], [Document("c", near)]]
    ids = [[d.id for d in shard] for shard in shards]
    rows = [np.stack([step.signature(d) for d in shard]) for shard in shards]
    decisions = step.decide(ids, rows)
    assert decisions == [{}, {0: ("near_duplicate", "duplicate of a")}]


def test_exact_dedup_compares_normalized_text():
    step = ExactDedup()
    shards = [[Document("a", "Hello,   World!\nSee you."), Document("b", "Something else.")],
              [Document("c", "hello world see you"), Document("d", "Hello World, see you too.")]]
    ids = [[d.id for d in shard] for shard in shards]
    rows = [np.stack([step.signature(d) for d in shard]) for shard in shards]
    assert step.decide(ids, rows) == [{}, {0: ("exact_duplicate", "duplicate of a")}]
