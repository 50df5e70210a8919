"""The projection prior's descriptors (cvgl/prior.py), fused into the pseudo-label scores, and the CSLS rescaling
(score options of cvgl/labels.py's one exact matcher), against dense hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvgl.index import similarity_blocks
from cvgl.labels import csls_blocks, fused_similarity_blocks, matches_from_blocks, mutual_matches, pixel_similarity
from cvgl.models import centre_disc
from cvgl.pipeline import pseudo_label_stage
from cvgl.prior import pixel_descriptors


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pixel_descriptors_ignore_gain_offset_and_everything_off_the_disc() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, (3, 16, 16, 3)).astype(np.uint8)
    desc = pixel_descriptors(images, 16, 0.5)
    disc = centre_disc((16, 16), 0.5).bool().numpy()
    assert desc.shape == (3, 3 * int(disc.sum()))
    per_channel = desc.reshape(3, 3, -1)
    np.testing.assert_allclose(per_channel.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(-1, ddof=1), 1.0, atol=1e-3)
    # Another sensor's gain and offset per channel, and anything outside the disc, change nothing.
    other = images.astype(np.float32) * np.array([0.5, 1.2, 0.8]) + np.array([40, 5, 20])
    other[:, ~disc] = rng.integers(0, 255, (3, int((~disc).sum()), 3))
    np.testing.assert_allclose(pixel_descriptors(other.astype(np.float32), 16, 0.5), desc, atol=1e-3)


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_fused_scores_equal_the_dense_formula(chunk: int) -> None:
    rng = np.random.default_rng(1)
    g, s = unit_rows(rng, 9, 8), unit_rows(rng, 7, 8)
    pg, ps = rng.normal(size=(9, 12)).astype(np.float32), rng.normal(size=(7, 12)).astype(np.float32)
    weight = 1.5
    cross = g.astype(np.float64) @ s.T
    pixel = -np.abs(pg[:, None].astype(np.float64) - ps[None]).sum(-1)

    def z(m: np.ndarray) -> np.ndarray:
        return (m - m.mean(1, keepdims=True)) / m.std(1, ddof=1, keepdims=True)

    sigma = cross.std(1, ddof=1).mean()
    expected = sigma * (z(cross) + weight * z(pixel)) / (1 + weight)
    blocks = list(fused_similarity_blocks(g, s, pg, ps, weight, chunk))
    got = np.concatenate([b.numpy() for _, b in blocks])
    assert [start for start, _ in blocks] == list(range(0, 9, chunk))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Mutual matching on the blocks is mutual matching on the dense fused matrix.
    m = matches_from_blocks(iter(blocks), 9, 7)
    assert np.array_equal(m.top1, expected.argmax(1))
    assert np.array_equal(m.reverse_top1, expected.argmax(0))


def test_the_correlation_metric_is_a_product_that_ranks_as_squared_distance() -> None:
    rng = np.random.default_rng(5)
    g, s = unit_rows(rng, 9, 8), unit_rows(rng, 7, 8)
    pg = pixel_descriptors(rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8), 8, None)
    ps = pixel_descriptors(rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8), 8, None)
    pixel = pixel_similarity(torch.from_numpy(pg), torch.from_numpy(ps), "correlation").numpy()
    np.testing.assert_allclose(pixel, pg.astype(np.float64) @ ps.T, rtol=1e-4, atol=1e-3)
    # Standardised descriptors share one norm, so each row ranks tiles as the negative squared distance does.
    sq = -((pg[:, None].astype(np.float64) - ps[None]) ** 2).sum(-1)
    assert np.array_equal(np.argsort(-pixel, 1), np.argsort(-sq, 1))
    fused = np.concatenate([b.numpy() for _, b in fused_similarity_blocks(g, s, pg, ps, 1.0, 4,
                                                                          metric="correlation")])
    l1 = np.concatenate([b.numpy() for _, b in fused_similarity_blocks(g, s, pg, ps, 1.0, 4)])
    assert not np.allclose(fused, l1)  # the metric reaches the fused scores
    with pytest.raises(ValueError, match="prior_metric"):
        next(fused_similarity_blocks(g, s, pg, ps, 1.0, 4, metric="l2"))


def test_weight_zero_keeps_the_network_ranking_and_bad_weights_fail() -> None:
    rng = np.random.default_rng(2)
    g, s = unit_rows(rng, 6, 4), unit_rows(rng, 6, 4)
    pg, ps = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
    fused = np.concatenate([b.numpy() for _, b in fused_similarity_blocks(g, s, pg, ps, 0.0, 4)])
    assert np.array_equal(fused.argmax(1), mutual_matches(g, s).top1)
    with pytest.raises(ValueError, match="prior_weight"):
        next(fused_similarity_blocks(g, s, pg, ps, -1.0, 4))
    with pytest.raises(ValueError, match="one descriptor per"):
        next(fused_similarity_blocks(g, s, pg[:5], ps, 1.0, 4))


def test_a_prior_weight_without_descriptors_is_a_clear_error(tmp_path) -> None:
    from cvgl.embed_io import write_embedding_shards
    from cvgl.index import build_index, write_index

    rng = np.random.default_rng(3)
    g, s = unit_rows(rng, 4, 4), unit_rows(rng, 4, 4)
    emb = tmp_path / "emb"
    write_embedding_shards([f"g{i}" for i in range(4)], g, emb, "ground")
    write_embedding_shards([f"s{i}" for i in range(4)], s, emb, "satellite")
    write_index(build_index(s), [f"s{i}" for i in range(4)], tmp_path / "index.faiss")
    import pandas as pd

    pd.DataFrame({"ground_id": pd.Series([], dtype=str), "satellite_id": pd.Series([], dtype=str)}).to_parquet(
        tmp_path / "labeled.parquet")
    cfg = {"t0": 0.05, "rounds": 2, "prior_weight": 1.0}
    with pytest.raises(ValueError, match="prior_weight"):
        pseudo_label_stage(emb, tmp_path / "index.faiss", tmp_path / "labeled.parquet", 1, cfg,
                           tmp_path / "m.parquet", 1)
    assert not (tmp_path / "m.parquet").exists()


def csls_reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Dense CSLS of Conneau et al. (2018), halved to stay in the scores' units."""
    k_row, k_col = min(k, scores.shape[1]), min(k, scores.shape[0])
    r_g = np.sort(scores, axis=1)[:, -k_row:].mean(1, keepdims=True)
    r_s = np.sort(scores, axis=0)[-k_col:].mean(0, keepdims=True)
    return scores - (r_g + r_s) / 2


@pytest.mark.parametrize(("chunk", "k"), [(1, 3), (4, 3), (100, 3), (4, 20)])
def test_csls_blocks_equal_the_dense_formula(chunk: int, k: int) -> None:
    rng = np.random.default_rng(4)
    g, s = unit_rows(rng, 11, 8), unit_rows(rng, 7, 8)  # k = 20 exceeds both sides: all scores count
    expected = csls_reference(g.astype(np.float64) @ s.T, k)
    blocks = list(csls_blocks(lambda: similarity_blocks(g, s, chunk), 11, 7, k))
    assert [start for start, _ in blocks] == list(range(0, 11, chunk))
    np.testing.assert_allclose(np.concatenate([b.numpy() for _, b in blocks]), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="csls_k"):
        next(csls_blocks(lambda: similarity_blocks(g, s, chunk), 11, 7, 0))


def test_csls_turns_a_hub_back_into_the_right_mutual_pairs() -> None:
    # Tile 3 is every panorama's top-1 (a hub), so only one pair is mutual; each panorama's own tile is second.
    scores = np.array([[0.9, 0.1, 0.1, 0.95],
                       [0.1, 0.9, 0.1, 0.95],
                       [0.1, 0.1, 0.9, 0.95]], dtype=np.float32)
    plain = matches_from_blocks(iter([(0, torch.from_numpy(scores.copy()))]), 3, 4)
    assert plain.top1.tolist() == [3, 3, 3] and plain.mutual.sum() == 1
    fixed = matches_from_blocks(csls_blocks(lambda: iter([(0, torch.from_numpy(scores.copy()))]), 3, 4, 2), 3, 4)
    assert fixed.top1.tolist() == [0, 1, 2] and fixed.mutual.all()


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_mutual_matches_with_csls_are_the_dense_mutual_matches(weight: float) -> None:
    rng = np.random.default_rng(5)
    g, s = unit_rows(rng, 13, 6), unit_rows(rng, 10, 6)
    pg, ps = rng.normal(size=(13, 5)).astype(np.float32), rng.normal(size=(10, 5)).astype(np.float32)
    base = np.concatenate([b.numpy() for _, b in fused_similarity_blocks(g, s, pg, ps, weight, 4)]) if weight \
        else g.astype(np.float64) @ s.T
    expected = csls_reference(base.astype(np.float64), 3)
    m = mutual_matches(g, s, 4, prior=(pg, ps), prior_weight=weight, csls_k=3)
    assert np.array_equal(m.top1, expected.argmax(1))
    assert np.array_equal(m.reverse_top1, expected.argmax(0))
    np.testing.assert_allclose(m.score, expected.max(1), rtol=1e-4, atol=1e-5)
    # csls_k = 0 is the plain (or fused) matching.
    plain = mutual_matches(g, s, 4, prior=(pg, ps), prior_weight=weight)
    assert np.array_equal(plain.top1, base.argmax(1))
