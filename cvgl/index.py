"""Nearest-neighbour search: FAISS indices on disk and exact blocked similarity for matching and evaluation.

Embeddings are float32 and L2-normalised, so the inner product is the cosine similarity and every index uses
`METRIC_INNER_PRODUCT`. An index file never stands alone: the image ids travel in a sidecar table (row i = faiss
id i), because positions mean nothing once another stage lists the images in a different order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cvgl.io import atomic_path, ids_sidecar, reading

if TYPE_CHECKING:  # torch is imported where a block is computed: the config check reads this module too
    import torch


def as_embedding_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """Return `x` as a C-contiguous float32 (rows, d) array; reject other shapes and non-finite values.

    A diverged model produces NaNs, and argmax over NaNs silently returns garbage, so this fails loudly instead.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (rows, dim) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: embeddings contain NaN or infinite values")
    return x


#: The most bytes of one block of scores (rows x M float32): exact matching's memory is bounded by this, not by N.
BLOCK_BYTES = 256 * 2**20


def block_rows(chunk: int, columns: int) -> int:
    """Rows per block: at most `chunk` (`labels.chunk`), and at most `BLOCK_BYTES` of scores against `columns`."""
    return max(1, min(chunk, BLOCK_BYTES // (4 * max(1, columns))))


def similarity_blocks(query: np.ndarray, reference: np.ndarray, chunk: int,
                      device: str | torch.device = "cpu") -> Iterator[tuple[int, torch.Tensor]]:
    """Yield `(start, query[start:start+chunk] @ reference.T)` for consecutive blocks of query rows.

    Only one (chunk, R) block exists at a time, so memory is O(chunk * R) whatever the number of queries. The
    block is a fresh tensor the caller may modify in place. Torch's thread count is left to the caller
    (`torch.set_num_threads`).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if query.shape[1] != reference.shape[1]:
        raise ValueError(f"dimension mismatch: queries have d={query.shape[1]}, references d={reference.shape[1]}")
    import torch

    # No autograd context is needed: tensors made from numpy never require grad. (An inference_mode block here
    # would stay active in the caller's loop body while the generator is suspended.)
    ref = torch.from_numpy(reference).to(device)
    for start in range(0, query.shape[0], chunk):
        block = torch.from_numpy(query[start:start + chunk]).to(device)
        yield start, block @ ref.T


def build_index(emb: np.ndarray, factory: str = "Flat", search: str | None = None) -> faiss.Index:
    """Build an inner-product FAISS index named by a factory string (e.g. "Flat", "IVF256,Flat", "HNSW32").

    Indices that need training (IVF, PQ) are trained on `emb` itself: the reference set is the whole database
    (FAISS subsamples it for k-means). `search` sets search-time parameters, e.g. "nprobe=16" or "efSearch=64".
    """
    emb = as_embedding_matrix(emb, "index embeddings")
    index = faiss.index_factory(emb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(emb)
    index.add(emb)
    set_search_parameters(index, search)
    return index


def set_search_parameters(index: faiss.Index, search: str | None) -> None:
    """Apply "name=value,..." search parameters (nprobe, efSearch, ...); errors name the bad parameter."""
    if not search:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, search)
    except RuntimeError as err:
        raise ValueError(f"labels.search {search!r}: {err}") from None


def write_index(index: faiss.Index, ids: Sequence[str], path: Path) -> None:
    """Write `index` to `path` and its ids to `ids_sidecar(path)` (`<path>.ids.parquet`), both atomically."""
    path = Path(path)
    if len(ids) != index.ntotal:
        raise ValueError(f"{path}: index holds {index.ntotal} vectors but {len(ids)} ids were given")
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    table = pa.table({"image_id": pa.array([str(i) for i in ids], type=pa.string())})
    with atomic_path(ids_sidecar(path)) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_index(path: Path) -> tuple[faiss.Index, np.ndarray]:
    """Read an index and its ids (row i = faiss id i); errors name the file that is missing or inconsistent."""
    path = Path(path)
    sidecar = ids_sidecar(path)
    with reading(path, "FAISS index"):
        index = faiss.read_index(str(path))
    with reading(sidecar, "index id table"):
        table = pq.read_table(sidecar)
    if "image_id" not in table.column_names:
        raise ValueError(f"{sidecar}: missing column 'image_id'; found {table.column_names}")
    ids = np.asarray(table.column("image_id").to_pylist(), dtype=object)
    if len(ids) != index.ntotal:
        raise ValueError(f"{sidecar}: {len(ids)} ids but {path} holds {index.ntotal} vectors")
    return index, ids


def set_threads(n: int) -> None:
    """Set the number of OpenMP threads FAISS uses (it otherwise takes every core, ignoring the job's share)."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    faiss.omp_set_num_threads(n)
