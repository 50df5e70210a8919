"""Embedding shards: `{prefix}-{part:04d}.parquet` files of (image_id, embedding) rows.

Shards have a bounded number of rows so that no single file (or the memory to write it) grows with the dataset.
Readers get the rows sorted by image id, so whatever order the images were embedded in, downstream results depend
only on the ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cvgl.index import as_embedding_matrix
from cvgl.io import atomic_path, reading

EMBEDDING_COLUMNS = ("image_id", "embedding")


def shard_path(out_dir: Path, prefix: str, part: int) -> Path:
    return Path(out_dir) / f"{prefix}-{part:04d}.parquet"


def _shard_pattern(prefix: str) -> re.Pattern[str]:
    # An exact pattern, so that prefix "ground" does not also pick up the shards of a prefix "ground-extra".
    return re.compile(rf"{re.escape(prefix)}-\d{{4,}}\.parquet")


def _shard_table(ids: list[str], emb: np.ndarray) -> pa.Table:
    values = pa.array(emb.reshape(-1), type=pa.float32())
    embedding = pa.FixedSizeListArray.from_arrays(values, emb.shape[1])
    return pa.table({"image_id": pa.array(ids, type=pa.string()), "embedding": embedding})


#: The most bytes of embeddings one shard holds: wide rows (the prior's pixel descriptors) get fewer per shard,
#: so reading or writing one never needs more than this at once.
SHARD_BYTES = 256 * 2**20


def write_embedding_shards(ids: Sequence[str], emb: np.ndarray, out_dir: Path, prefix: str,
                           max_rows: int = 50_000) -> list[Path]:
    """Write `emb` (rows in the order of `ids`) as shards of at most `max_rows` rows and `SHARD_BYTES` bytes;
    return their paths.

    Each shard is written atomically. At least one shard is written (an empty one for zero rows, which still
    records the dimension). Shards of the same prefix left by an earlier, larger write are removed, so a reader
    globbing the directory never mixes two runs.
    """
    emb = as_embedding_matrix(emb, f"{prefix} embeddings")
    ids = [str(i) for i in ids]
    if len(ids) != emb.shape[0]:
        raise ValueError(f"{prefix}: {len(ids)} ids for {emb.shape[0]} embedding rows")
    if emb.shape[1] < 1:
        raise ValueError(f"{prefix}: embeddings have dimension 0")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    max_rows = max(1, min(max_rows, SHARD_BYTES // (4 * emb.shape[1])))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for part, start in enumerate(range(0, max(1, emb.shape[0]), max_rows)):
        path = shard_path(out_dir, prefix, part)
        with atomic_path(path) as tmp:
            table = _shard_table(ids[start:start + max_rows], emb[start:start + max_rows])
            pq.write_table(table, tmp, compression="zstd", row_group_size=_group_rows(emb.shape[1]))
        paths.append(path)
    written = {p.name for p in paths}
    for stale in list_shards(out_dir, prefix):
        if stale.name not in written:
            stale.unlink()
    return paths


def list_shards(directory: Path, prefix: str | None = None) -> list[Path]:
    """The shard files of `prefix` in `directory` (every `*.parquet` if prefix is None), sorted by name."""
    directory = Path(directory)
    if prefix is None:
        return sorted(directory.glob("*.parquet"))
    pattern = _shard_pattern(prefix)
    return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name))


def _read_shard_header(path: Path) -> tuple[list[str], int]:
    """A shard's image ids (its `image_id` column only) and embedding dimension, after checking its columns."""
    with reading(path, "embedding shard"):
        shard = pq.ParquetFile(path)
        names = shard.schema_arrow.names
        for column in EMBEDDING_COLUMNS:
            if column not in names:
                raise ValueError(f"{path}: missing column '{column}'; found {names}")
        column_type = shard.schema_arrow.field("embedding").type
        if not pa.types.is_fixed_size_list(column_type):
            raise ValueError(f"{path}: column 'embedding' must be a fixed-size list of float32, got {column_type}")
        return shard.read(columns=["image_id"]).column("image_id").to_pylist(), column_type.list_size


#: Rows per Parquet row group and per read batch, by bytes: a reader decodes one group at a time.
GROUP_BYTES = 16 * 2**20


def _group_rows(dim: int) -> int:
    return max(1, GROUP_BYTES // (4 * max(1, dim)))


def _read_shard_vectors(path: Path, dim: int) -> Iterator[np.ndarray]:
    """A shard's embeddings as consecutive float32 (rows, dim) batches of about `GROUP_BYTES` each."""
    with reading(path, "embedding shard"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_group_rows(dim), columns=["embedding"]):
            flat = batch.column(0).flatten().to_numpy(zero_copy_only=False)
            yield flat.astype(np.float32, copy=False).reshape(batch.num_rows, dim)


def read_embeddings(paths_or_dir: Path | str | Iterable[Path | str],
                    prefix: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read shards and return `(ids, emb)`: ids an object array of str, emb float32 (n, d), sorted by image id.

    `paths_or_dir` is a directory (its `prefix` shards, or every parquet file if prefix is None), a single shard,
    or an iterable of shard paths. Duplicate ids or differing dimensions across shards are errors.
    Peak memory is the result plus one row group (`GROUP_BYTES`): the ids are read first, then each group's
    rows are written straight to their sorted places.
    """
    if isinstance(paths_or_dir, (str, Path)) and Path(paths_or_dir).is_dir():
        paths = list_shards(Path(paths_or_dir), prefix)
        if not paths:
            raise FileNotFoundError(f"{paths_or_dir}: no embedding shards for prefix {prefix!r}")
    elif isinstance(paths_or_dir, (str, Path)):
        paths = [Path(paths_or_dir)]
    else:
        paths = [Path(p) for p in paths_or_dir]
    if not paths:
        raise ValueError("read_embeddings: no shard paths given")
    headers = [_read_shard_header(path) for path in paths]
    for path, (_, dim) in zip(paths, headers, strict=True):
        if dim != headers[0][1]:
            raise ValueError(f"{path}: embedding dimension {dim} differs from {paths[0]}'s {headers[0][1]}")
    all_ids = np.asarray([i for ids, _ in headers for i in ids], dtype=object)
    order = np.argsort(all_ids, kind="stable")
    all_ids = all_ids[order]
    duplicated = all_ids[1:][all_ids[1:] == all_ids[:-1]]
    if len(duplicated):
        raise ValueError(f"duplicate image id {duplicated[0]!r} in embedding shards {[str(p) for p in paths]}")
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order))  # read row r goes to sorted row place[r]
    out = np.empty((len(all_ids), headers[0][1]), dtype=np.float32)
    start = 0
    for path, (ids, dim) in zip(paths, headers, strict=True):
        end = start + len(ids)
        for block in _read_shard_vectors(path, dim):
            rows = place[start:start + len(block)]
            if start + len(block) > end:
                raise ValueError(f"{path}: more embeddings than its {len(ids)} ids")
            if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
                out[rows[0]:rows[0] + len(rows)] = block  # already in order: one contiguous copy
            else:
                out[rows] = block
            start += len(block)
        if start != end:
            raise ValueError(f"{path}: {len(ids)} ids but {len(ids) - (end - start)} embeddings")
        # Arrow's pool (mimalloc) keeps freed blocks; a job reading a few GB of shards held ~3x their size.
        pa.default_memory_pool().release_unused()
    return all_ids, out
