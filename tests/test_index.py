"""FAISS indices with id sidecars, and embedding shards."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cvgl.embed_io import read_embeddings, write_embedding_shards
from cvgl.index import build_index, read_index, write_index
from cvgl.io import ids_sidecar


def unit_rows(seed: int, n: int, d: int = 16) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_search_equals_brute_force() -> None:
    database, queries = unit_rows(0, 200), unit_rows(1, 30)
    scores, rows = build_index(database).search(queries, 5)
    sims = queries @ database.T
    np.testing.assert_array_equal(rows, np.argsort(-sims, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.take_along_axis(sims, rows, axis=1), atol=1e-6)


def test_trained_factory_index_is_built() -> None:
    index = build_index(unit_rows(0, 300), "IVF4,Flat")
    assert index.is_trained and index.ntotal == 300


def test_index_round_trip_keeps_ids(tmp_path) -> None:
    database, queries = unit_rows(2, 50), unit_rows(3, 7)
    ids = [f"sat-{i:02d}" for i in range(50)]
    path = tmp_path / "index" / "train-satellite.faiss"
    index = build_index(database)
    write_index(index, ids, path)
    assert ids_sidecar(path).exists()
    loaded, loaded_ids = read_index(path)
    assert loaded_ids.tolist() == ids and loaded.ntotal == 50
    np.testing.assert_array_equal(loaded.search(queries, 3)[1], index.search(queries, 3)[1])


def test_index_files_must_agree(tmp_path) -> None:
    path = tmp_path / "x.faiss"
    index = build_index(unit_rows(0, 5))
    with pytest.raises(ValueError, match="5 vectors but 4 ids"):
        write_index(index, ["a", "b", "c", "d"], path)
    write_index(index, list("abcde"), path)
    ids_sidecar(path).unlink()
    with pytest.raises(FileNotFoundError, match="ids.parquet"):
        read_index(path)


def test_shards_split_at_max_rows_and_read_back_sorted(tmp_path) -> None:
    emb = unit_rows(4, 23, d=8)
    ids = [f"img-{i:02d}" for i in np.random.default_rng(0).permutation(23)]
    paths = write_embedding_shards(ids, emb, tmp_path, "ground", max_rows=10)
    assert [p.name for p in paths] == ["ground-0000.parquet", "ground-0001.parquet", "ground-0002.parquet"]
    assert [pq.read_metadata(p).num_rows for p in paths] == [10, 10, 3]
    assert pq.read_schema(paths[0]).field("embedding").type == pa.list_(pa.float32(), 8)
    read_ids, read_emb = read_embeddings(tmp_path, "ground")
    order = np.argsort(ids)
    assert read_ids.tolist() == sorted(ids)
    np.testing.assert_array_equal(read_emb, emb[order])
    same_ids, same_emb = read_embeddings(list(reversed(paths)))
    assert same_ids.tolist() == sorted(ids) and np.array_equal(same_emb, read_emb)


def test_rewriting_shards_removes_stale_parts_of_that_prefix_only(tmp_path) -> None:
    write_embedding_shards([f"g{i}" for i in range(25)], unit_rows(5, 25), tmp_path, "ground", max_rows=10)
    write_embedding_shards(["s0", "s1"], unit_rows(6, 2), tmp_path, "ground-extra")
    write_embedding_shards(["g0", "g1", "g2"], unit_rows(7, 3), tmp_path, "ground", max_rows=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ground-0000.parquet", "ground-extra-0000.parquet"]
    assert read_embeddings(tmp_path, "ground")[0].tolist() == ["g0", "g1", "g2"]


def test_duplicate_ids_across_shards_are_an_error(tmp_path) -> None:
    write_embedding_shards(["a", "b"], unit_rows(8, 2), tmp_path, "one")
    write_embedding_shards(["b", "c"], unit_rows(9, 2), tmp_path, "two")
    with pytest.raises(ValueError, match="duplicate image id 'b'"):
        read_embeddings(tmp_path)
