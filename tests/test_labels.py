"""Adaptive Mutual Matching: the blocked matcher against a brute-force reference, and the label table contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cvgl.embed_io import read_embeddings, write_embedding_shards
from cvgl.index import build_index, write_index
from cvgl.label_table import LABEL_COLUMNS, fill_correct, label_summary, read_label_table, write_label_table
from cvgl.labels import Matches, build_label_table, margin_threshold, mutual_matches, mutual_matches_faiss
from cvgl.pipeline import pseudo_label_stage, round_threshold

MATCH_FIELDS = ("top1", "score", "second_score", "mutual", "reverse_top1")


def gaussian(rng: np.random.Generator, n: int, d: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def quantised(rng: np.random.Generator, n: int, d: int = 8, nonzero: int = 4) -> np.ndarray:
    """Unit vectors with `nonzero` entries of ±0.5: every dot product is a multiple of 0.25, computed exactly in
    float32 whatever the summation order, so scores tie exactly and often."""
    x = np.zeros((n, d), dtype=np.float32)
    for row in x:
        row[rng.choice(d, nonzero, replace=False)] = rng.choice([-0.5, 0.5], nonzero)
    return x


def brute_force(ground: np.ndarray, satellite: np.ndarray) -> Matches:
    """The definition, spelled out on the full matrix: np.argmax takes the lowest index among ties."""
    sims = ground @ satellite.T
    n, m = sims.shape
    top1 = np.array([np.argmax(sims[g]) for g in range(n)], dtype=np.int64)
    score = np.array([sims[g, top1[g]] for g in range(n)], dtype=np.float32)
    second = np.array([max((sims[g, s] for s in range(m) if s != top1[g]), default=-np.inf) for g in range(n)],
                      dtype=np.float32)
    reverse = np.array([np.argmax(sims[:, s]) for s in range(m)], dtype=np.int64)
    mutual = np.array([reverse[top1[g]] == g for g in range(n)])
    return Matches(top1, score, second, mutual, reverse)


def tied_world(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N=53, M=37 quantised embeddings with duplicated satellites and grounds far apart (different blocks)."""
    rng = np.random.default_rng(seed)
    satellite = quantised(rng, 34)
    satellite = np.concatenate([satellite, satellite[[3, 7, 3]]])
    ground = quantised(rng, 50)
    ground = np.concatenate([ground, ground[[1, 2, 20]]])
    return ground, satellite


def assert_same_matches(got: Matches, expected: Matches) -> None:
    for field in MATCH_FIELDS:
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("chunk", [1, 8, 4096])
def test_mutual_matches_equals_brute_force_with_exact_ties(seed: int, chunk: int) -> None:
    ground, satellite = tied_world(seed)
    expected = brute_force(ground, satellite)
    sims = ground @ satellite.T
    # The data really has ties: tied runner-ups in rows and several best grounds in columns.
    assert (expected.score == expected.second_score).any()
    assert ((sims == sims.max(axis=0)).sum(axis=0) > 1).any()
    assert_same_matches(mutual_matches(ground, satellite, chunk=chunk), expected)


def test_mutual_matches_equals_brute_force_on_continuous_data() -> None:
    rng = np.random.default_rng(1)
    ground, satellite = gaussian(rng, 70), gaussian(rng, 45)
    got, expected = mutual_matches(ground, satellite, chunk=16), brute_force(ground, satellite)
    for field in ("top1", "mutual", "reverse_top1"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    np.testing.assert_allclose(got.score, expected.score, atol=1e-6)
    np.testing.assert_allclose(got.second_score, expected.second_score, atol=1e-6)


def test_mutual_pairs_are_one_to_one_and_each_others_nearest_neighbour() -> None:
    ground, satellite = tied_world(3)
    matches = mutual_matches(ground, satellite, chunk=8)
    kept_grounds = np.flatnonzero(matches.mutual)
    assert len(kept_grounds) > 0
    assert len(set(matches.top1[kept_grounds])) == len(kept_grounds)
    for g in kept_grounds:
        assert matches.reverse_top1[matches.top1[g]] == g


def test_single_satellite_has_no_runner_up() -> None:
    rng = np.random.default_rng(2)
    ground, satellite = gaussian(rng, 9), gaussian(rng, 1)
    matches = mutual_matches(ground, satellite, chunk=4)
    assert np.isneginf(matches.second_score).all() and np.isposinf(matches.margin).all()
    assert matches.mutual.sum() == 1 and matches.mutual[np.argmax(ground @ satellite[0])]


def test_mutual_matches_rejects_bad_input() -> None:
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="dimension mismatch"):
        mutual_matches(gaussian(rng, 4, 8), gaussian(rng, 4, 16))
    bad = gaussian(rng, 4)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mutual_matches(bad, gaussian(rng, 4))
    with pytest.raises(ValueError, match="at least one"):
        mutual_matches(gaussian(rng, 4), np.zeros((0, 32), np.float32))


@pytest.mark.parametrize("prebuilt", [False, True])
def test_faiss_variant_agrees_on_untied_data(prebuilt: bool) -> None:
    rng = np.random.default_rng(4)
    ground, satellite = gaussian(rng, 120), gaussian(rng, 90)
    index = build_index(satellite) if prebuilt else None
    got, expected = mutual_matches_faiss(ground, satellite, index), mutual_matches(ground, satellite, chunk=32)
    for field in ("top1", "mutual", "reverse_top1"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    np.testing.assert_allclose(got.score, expected.score, atol=1e-6)
    np.testing.assert_allclose(got.second_score, expected.second_score, atol=1e-6)


def test_approximate_indices_in_both_directions_match_exact_when_probing_every_list() -> None:
    rng = np.random.default_rng(5)
    ground, satellite = gaussian(rng, 400), gaussian(rng, 300)
    exact = mutual_matches(ground, satellite)
    index = build_index(satellite, "IVF8,Flat", "nprobe=8")  # every list probed: exhaustive
    got = mutual_matches_faiss(ground, satellite, index, reverse_factory="IVF8,Flat", search="nprobe=8")
    for field in ("top1", "mutual", "reverse_top1"):
        np.testing.assert_array_equal(getattr(got, field), getattr(exact, field))
    cheap = mutual_matches_faiss(ground, satellite, build_index(satellite, "IVF8,Flat", "nprobe=1"),
                                 reverse_factory="IVF8,Flat", search="nprobe=1")
    assert (cheap.top1 == exact.top1).mean() > 0.2  # approximate: one list of eight, still mostly right
    with pytest.raises(ValueError, match="labels.search"):
        build_index(satellite, "IVF8,Flat", "nosuchparameter=3")


def test_faiss_variant_tie_rule_as_observed_in_faiss_flat() -> None:
    # Not a FAISS guarantee: this pins the documented behaviour so a FAISS upgrade that changes it is noticed.
    ground, satellite = tied_world(0)
    assert_same_matches(mutual_matches_faiss(ground, satellite), brute_force(ground, satellite))


def test_margin_threshold_follows_the_cosine_curriculum() -> None:
    values = [margin_threshold(r, 0.05, 5) for r in range(1, 6)]
    assert values[0] == 0.05
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] > 0
    assert margin_threshold(3, 0.04, 4) == pytest.approx(0.02)  # half-way: cos(pi/2) = 0
    for bad_round in (0, 6):
        with pytest.raises(ValueError, match="round_index"):
            margin_threshold(bad_round, 0.05, 5)


THRESHOLD = 0.25
GROUNDS, SATELLITES = ["g0", "g1", "g2", "g3"], ["s0", "s1", "s2"]


def hand_matches() -> Matches:
    """4 grounds x 3 satellites; ground rows 0..3 are g0..g3, satellites s0..s2."""
    return Matches(
        top1=np.array([0, 1, 1, 2]),
        # Dyadic values, so margins and the threshold comparison are exact in float32.
        score=np.array([0.875, 0.75, 0.625, 0.5], np.float32),
        second_score=np.array([0.5, 0.734375, 0.25, 0.25], np.float32),
        mutual=np.array([True, True, False, True]),
        reverse_top1=np.array([0, 1, 3]),
    )


def hand_table(ground_ids: list[str] = GROUNDS, labeled: pd.DataFrame | None = None) -> pd.DataFrame:
    return build_label_table(ground_ids, SATELLITES, hand_matches(), THRESHOLD, labeled)


def test_label_table_keeps_mutual_pairs_with_enough_margin() -> None:
    table = hand_table()
    assert list(table.columns) == list(LABEL_COLUMNS)
    assert list(table["satellite_id"]) == ["s0", "s1", "s1", "s2"]
    assert table["margin"].tolist() == [0.375, 0.015625, 0.375, 0.25]
    # g1: margin too small; g2: margin fine but not mutual; g3: margin == threshold is kept.
    assert list(table["kept"]) == [True, False, False, True]
    assert set(table["source"]) == {"pseudo"} and table["correct"].isna().all()
    assert table["threshold"].dtype == np.float32 and table["score"].dtype == np.float32


def test_the_ablation_switches_drop_one_part_of_the_selection_each() -> None:
    """Without mutual matching every top-1 with the margin is kept (g2 joins); without the threshold filter every
    mutual pair is (g1 joins, threshold 0); without the curriculum round n's threshold is round 1's."""
    no_mutual = build_label_table(GROUNDS, SATELLITES, hand_matches(), THRESHOLD, require_mutual=False)
    assert list(no_mutual["kept"]) == [True, False, True, True]
    assert list(no_mutual["mutual"]) == [True, True, False, True]  # still recorded
    cfg = {"t0": THRESHOLD, "rounds": 4, "margin_filter": False}
    no_filter = build_label_table(GROUNDS, SATELLITES, hand_matches(), round_threshold(3, cfg))
    assert list(no_filter["kept"]) == [True, True, False, True] and set(no_filter["threshold"]) == {0.0}
    cosine = dict(cfg, margin_filter=True)
    assert round_threshold(3, cosine) == margin_threshold(3, THRESHOLD, 4) == pytest.approx(THRESHOLD / 2)
    constant = dict(cosine, threshold_schedule="constant")
    assert [round_threshold(n, constant) for n in range(1, 5)] == [THRESHOLD] * 4
    with pytest.raises(ValueError, match="threshold_schedule"):
        margin_threshold(1, THRESHOLD, 4, "linear")


def test_label_table_is_sorted_by_ground_id() -> None:
    table = hand_table(["g3", "g1", "g0", "g2"])
    assert list(table["ground_id"]) == ["g0", "g1", "g2", "g3"]
    # g3 was row 0 (top1 s0, margin 0.375, kept); it moved, with its values, to the last row.
    assert table.iloc[3][["satellite_id", "kept"]].tolist() == ["s0", True]


def test_labeled_pairs_override_pseudo_ones() -> None:
    labeled = pd.DataFrame({"ground_id": ["g2"], "satellite_id": ["s0"]})
    table = hand_table(labeled=labeled)
    row = table.set_index("ground_id")
    assert row.loc["g2", ["satellite_id", "kept", "source"]].tolist() == ["s0", True, "labeled"]
    # g0 was the kept pseudo match of s0: one satellite, one ground, so it is un-kept.
    assert row.loc["g0", ["satellite_id", "kept", "source"]].tolist() == ["s0", False, "pseudo"]
    assert row.loc["g3", "kept"]
    with pytest.raises(ValueError, match="'gx' is not among"):
        hand_table(labeled=pd.DataFrame({"ground_id": ["gx"], "satellite_id": ["s0"]}))


def labels_from_shards(tmp_path, ground, satellite, satellite_order: np.ndarray) -> pd.DataFrame:
    """The pipeline's path: shards written in some order, read back sorted by id, matched, tabled."""
    ground_ids = [f"g{i:03d}" for i in range(len(ground))]
    satellite_ids = np.array([f"s{i:03d}" for i in range(len(satellite))])
    write_embedding_shards(ground_ids, ground, tmp_path, "ground", max_rows=16)
    write_embedding_shards(satellite_ids[satellite_order], satellite[satellite_order], tmp_path, "satellite",
                           max_rows=16)
    g_ids, g_emb = read_embeddings(tmp_path, "ground")
    s_ids, s_emb = read_embeddings(tmp_path, "satellite")
    return build_label_table(g_ids, s_ids, mutual_matches(g_emb, s_emb, chunk=8), threshold=0.0)


def test_labels_do_not_depend_on_the_order_satellites_are_listed_in(tmp_path) -> None:
    ground, satellite = tied_world(2)
    reference = labels_from_shards(tmp_path / "a", ground, satellite, np.arange(len(satellite)))
    shuffled = np.random.default_rng(0).permutation(len(satellite))
    pd.testing.assert_frame_equal(labels_from_shards(tmp_path / "b", ground, satellite, shuffled), reference)
    assert reference["kept"].any()


def pseudo_label_inputs(tmp_path) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Train embeddings and prior descriptors (40 grounds, 30 satellites) as the stage reads them, no labeled pairs."""
    rng = np.random.default_rng(6)
    ground, satellite = gaussian(rng, 40), gaussian(rng, 30)
    prior = rng.normal(size=(40, 12)).astype(np.float32), rng.normal(size=(30, 12)).astype(np.float32)
    for directory, (g, s) in (("emb", (ground, satellite)), ("prior", prior)):
        write_embedding_shards([f"g{i:02d}" for i in range(40)], g, tmp_path / directory, "ground")
        write_embedding_shards([f"s{i:02d}" for i in range(30)], s, tmp_path / directory, "satellite")
    pd.DataFrame({"ground_id": pd.Series([], dtype=str), "satellite_id": pd.Series([], dtype=str)}).to_parquet(
        tmp_path / "labeled.parquet")
    return ground, satellite, prior


def run_pseudo_label_stage(tmp_path, cfg: dict, index_path=None) -> pd.DataFrame:
    out = tmp_path / "matches.parquet"
    pseudo_label_stage(tmp_path / "emb", index_path, tmp_path / "labeled.parquet", 1, cfg, out, 1,
                       prior_dir=tmp_path / "prior")
    return read_label_table(out)


@pytest.mark.parametrize("options", [{}, {"prior_weight": 2.0}, {"csls_k": 3},
                                     {"prior_weight": 1.0, "prior_metric": "correlation", "csls_k": 3}],
                         ids=["plain", "prior", "csls", "prior-correlation-csls"])
def test_the_pseudo_label_stage_labels_with_the_one_exact_matcher(tmp_path, options: dict) -> None:
    ground, satellite, prior = pseudo_label_inputs(tmp_path)
    table = run_pseudo_label_stage(tmp_path, {"t0": 0.05, "rounds": 2, "chunk": 8, **options})
    matches = mutual_matches(ground, satellite, 8, prior=prior, prior_weight=options.get("prior_weight", 0.0),
                             prior_metric=options.get("prior_metric", "l1"), csls_k=options.get("csls_k", 0))
    expected = build_label_table([f"g{i:02d}" for i in range(40)], [f"s{i:02d}" for i in range(30)], matches,
                                 margin_threshold(1, 0.05, 2))
    pd.testing.assert_frame_equal(table, expected)


def test_the_pseudo_label_stage_through_an_exhaustive_index_labels_as_the_exact_matcher(tmp_path) -> None:
    _, satellite, _ = pseudo_label_inputs(tmp_path)
    exact = run_pseudo_label_stage(tmp_path, {"t0": 0.05, "rounds": 2})
    write_index(build_index(satellite, "IVF2,Flat", "nprobe=2"), [f"s{i:02d}" for i in range(30)],
                tmp_path / "index.faiss")
    approximate = run_pseudo_label_stage(tmp_path, {"t0": 0.05, "rounds": 2, "index": "IVF2,Flat",
                                                    "search": "nprobe=2"}, tmp_path / "index.faiss")
    for column in ("ground_id", "satellite_id", "mutual", "kept"):
        assert approximate[column].tolist() == exact[column].tolist(), column
    np.testing.assert_allclose(approximate["margin"], exact["margin"], atol=1e-6)


def test_label_table_parquet_is_byte_identical_and_round_trips(tmp_path) -> None:
    ground, satellite = tied_world(1)
    table = build_label_table([f"g{i}" for i in range(len(ground))], [f"s{i}" for i in range(len(satellite))],
                              mutual_matches(ground, satellite), threshold=0.1)
    truth = pd.DataFrame({"ground_id": ["g0", "g1"], "satellite_id": [table["satellite_id"].iloc[0], "none"],
                          "kind": "positive"})
    table = fill_correct(table, truth)
    write_label_table(table, tmp_path / "a.parquet")
    write_label_table(table, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    pd.testing.assert_frame_equal(read_label_table(tmp_path / "a.parquet"), table)


def test_read_label_table_names_the_file_and_the_missing_column(tmp_path) -> None:
    path = tmp_path / "labels.parquet"
    table = hand_table()
    table.drop(columns="kept").to_parquet(path)
    with pytest.raises(ValueError, match=f"{path}.*'kept'"):
        read_label_table(path)


def test_fill_correct_and_summary() -> None:
    labeled = pd.DataFrame({"ground_id": ["g2"], "satellite_id": ["s0"]})
    table = hand_table(labeled=labeled)
    # Kept: g2 (labeled, s0) and g3 (pseudo, s2). g3's positive is s1, so its pseudo label is wrong; g1 has only a
    # semi-positive row, so it gets no verdict.
    truth = pd.DataFrame({"ground_id": ["g0", "g1", "g2", "g3"], "satellite_id": ["s0", "s1", "s0", "s1"],
                          "kind": ["positive", "semi_positive", "positive", "positive"]})
    table = fill_correct(table, truth)
    assert table["correct"].tolist() == [True, pd.NA, True, False]
    assert label_summary(table) == {
        "total": 4, "mutual": 3, "kept": 2, "kept_pseudo": 1, "kept_labeled": 1, "correct": 1, "precision": 0.5,
        "correct_pseudo": 0, "precision_pseudo": 0.0, "coverage": 0.5,
    }


def test_summary_without_truth_reports_no_precision() -> None:
    table = hand_table()
    summary = label_summary(table)
    assert summary["kept"] == 2 and summary["coverage"] == 0.5
    assert summary["correct"] is None and summary["precision"] is None
