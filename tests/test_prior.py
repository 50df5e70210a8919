"""The projection prior fused into pseudo-label scores (cvgl/prior.py) against dense hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from cvgl.labels import matches_from_blocks, mutual_matches
from cvgl.models import centre_disc
from cvgl.pipeline import pseudo_label_stage
from cvgl.prior import fused_similarity_blocks, pixel_descriptors


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
