"""Retrieval ranks and Recall@K against numbers worked out by hand (docs/method.md §6)."""

from __future__ import annotations

import numpy as np
import pytest

from cvgl.metrics import hit_rate, recall_at_k, retrieval_ranks

# References r0..r4; r3 duplicates r0, so a query at [1, 0] scores both exactly 1.
REFERENCE = np.array([[1, 0], [0, 1], [0.6, 0.8], [1, 0], [-1, 0]], dtype=np.float32)
QUERY = np.array([[1, 0], [0, 1], [0.6, 0.8], [0, 1], [1, 0]], dtype=np.float32)
POSITIVE = np.array([3, 2, 4, 1, 0])
# q0: truth r3 scores 1, tied with r0 -> nothing strictly above: rank 0 (the tie favours the truth).
# q1: truth r2 scores 0.8, only r1 (1.0) is above: rank 1.
# q2: truth r4 scores -0.6; r0, r1, r2, r3 (0.6, 0.8, 1.0, 0.6) are above: rank 4.
# q3: truth r1 scores 1: rank 0.   q4: truth r0 scores 1, tied with r3: rank 0.
HAND_RANKS = [0, 1, 4, 0, 0]


def test_ranks_match_the_hand_computation() -> None:
    assert retrieval_ranks(QUERY, REFERENCE, POSITIVE).tolist() == HAND_RANKS


def test_recall_of_the_hand_example() -> None:
    # Gallery of 5: R@1% uses K = max(1, 5 // 100) = 1, so it equals R@1 = 3/5.
    assert recall_at_k(np.array(HAND_RANKS), gallery_size=5) == {"R@1": 0.6, "R@5": 1.0, "R@10": 1.0, "R@1%": 0.6}


def test_recall_at_one_percent_uses_floor_of_gallery_over_100() -> None:
    # Gallery 399 -> K = 3: ranks 0 and 2 count, 3 and 250 do not.
    ranks = np.array([0, 2, 3, 250])
    assert recall_at_k(ranks, gallery_size=399) == {"R@1": 0.25, "R@5": 0.75, "R@10": 0.75, "R@1%": 0.5}
    assert recall_at_k(ranks, 399, ks=(3,)) == {"R@3": 0.5, "R@1%": 0.5}


@pytest.mark.parametrize("chunk", [1, 2, 3, 4096])
def test_hand_ranks_do_not_depend_on_the_chunk(chunk: int) -> None:
    assert retrieval_ranks(QUERY, REFERENCE, POSITIVE, chunk=chunk).tolist() == HAND_RANKS


def test_ranks_do_not_depend_on_the_chunk_and_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    query = rng.standard_normal((103, 16)).astype(np.float32)
    reference = rng.standard_normal((57, 16)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    positive = rng.integers(0, len(reference), len(query))
    sims = query @ reference.T
    expected = (sims > sims[np.arange(len(query)), positive][:, None]).sum(axis=1)
    for chunk in (1, 10, 64, 4096):
        np.testing.assert_array_equal(retrieval_ranks(query, reference, positive, chunk=chunk), expected)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="positive rows"):
        retrieval_ranks(QUERY, REFERENCE, np.array([0, 1, 2, 3, 5]))
    with pytest.raises(ValueError, match="shape"):
        retrieval_ranks(QUERY, REFERENCE, np.array([0, 1]))
    with pytest.raises(ValueError, match="no queries"):
        recall_at_k(np.array([]), 10)


def test_hit_rate_lets_only_semi_positives_outrank_the_positive() -> None:
    # One-hot-ish references: query q's similarity to reference r is read off the matrix below.
    sims = np.array([[0.9, 0.5, 0.1, 0.0],   # positive 0 first: hit
                     [0.8, 0.5, 0.9, 0.0],   # positive 1, outranked by 2 (semi) and 0 (semi): hit
                     [0.9, 0.5, 0.1, 0.7],   # positive 3, outranked by 0 (semi, rank 1) and nothing else: hit
                     [0.9, 0.5, 0.6, 0.1]],  # positive 1, outranked by 0 (semi) and 2 (unrelated): miss
                    dtype=np.float32)
    reference = np.eye(4, dtype=np.float32)
    positive = np.array([0, 1, 3, 1])
    semi = np.array([[1, -1], [2, 0], [0, -1], [0, -1]])
    for chunk in (1, 3, 4096):
        assert hit_rate(sims, reference, positive, semi, chunk=chunk) == 0.75
    assert hit_rate(sims, reference, positive, np.full((4, 1), -1)) == 0.25  # no semis: top-1 accuracy
