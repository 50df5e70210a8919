"""Embedding shards: `{prefix}-{part:04d}.parquet` files of (image_id, embedding) rows.

Shards have a bounded number of rows so that no single file (or the memory to write it) grows with the dataset.
Readers get the rows sorted by image id, so whatever order the images were embedded in, downstream results depend
only on the ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
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
            pq.write_table(table, tmp, compression="zstd")
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


def _read_shard(path: Path) -> tuple[list[str], np.ndarray]:
    with reading(path, "embedding shard"):
        table = pq.read_table(path)
    for column in EMBEDDING_COLUMNS:
        if column not in table.column_names:
            raise ValueError(f"{path}: missing column '{column}'; found {table.column_names}")
    column_type = table.schema.field("embedding").type
    if not pa.types.is_fixed_size_list(column_type):
        raise ValueError(f"{path}: column 'embedding' must be a fixed-size list of float32, got {column_type}")
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    emb = flat.astype(np.float32, copy=False).reshape(table.num_rows, column_type.list_size)
    return table.column("image_id").to_pylist(), emb


def read_embeddings(paths_or_dir: Path | str | Iterable[Path | str],
                    prefix: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read shards and return `(ids, emb)`: ids an object array of str, emb float32 (n, d), sorted by image id.

    `paths_or_dir` is a directory (its `prefix` shards, or every parquet file if prefix is None), a single shard,
    or an iterable of shard paths. Duplicate ids or differing dimensions across shards are errors.
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
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for path in paths:
        shard_ids, shard_emb = _read_shard(path)
        if blocks and shard_emb.shape[1] != blocks[0].shape[1]:
            raise ValueError(f"{path}: embedding dimension {shard_emb.shape[1]} differs from {paths[0]}'s "
                             f"{blocks[0].shape[1]}")
        ids.extend(shard_ids)
        blocks.append(shard_emb)
    all_ids = np.asarray(ids, dtype=object)
    order = np.argsort(all_ids, kind="stable")
    all_ids = all_ids[order]
    duplicated = all_ids[1:][all_ids[1:] == all_ids[:-1]]
    if len(duplicated):
        raise ValueError(f"duplicate image id {duplicated[0]!r} in embedding shards {[str(p) for p in paths]}")
    # One output array filled shard by shard (no concatenated copy), reordered only when the shards were not
    # already in id order: peak memory about one copy of the embeddings, not three.
    out = np.empty((len(all_ids), blocks[0].shape[1]), dtype=np.float32)
    start = 0
    while blocks:
        block = blocks.pop(0)
        out[start:start + len(block)] = block
        start += len(block)
    if np.any(order != np.arange(len(order))):
        out = out[order]
    return all_ids, out
