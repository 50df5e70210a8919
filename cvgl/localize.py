"""Geo-localizing images: the top-K tiles of each query, with scores and coordinates, against a cached gallery.

`cvgl localize` embeds a gallery of north-up tiles once (their embeddings and a FAISS index under
`<out>/gallery/`, reused while the model and the gallery listing are unchanged), then streams the queries in
batches through the ground encoder and searches the index. A gallery is a CSV of `path,lat,lon` (paths relative
to the CSV) or a run's split (its decoded image cache and manifest coordinates); queries are one image, a folder,
a `.txt` list of paths, or a run's split. Unreadable query images are listed in `skipped.csv`, not fatal.

The evaluation's per-query table (`round-N/retrievals.parquet`) is built here too (`retrieval_table`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch

from cvgl.data.manifest import image_ids, read_images
from cvgl.embed import embed_images
from cvgl.embed_io import write_embedding_shards
from cvgl.geo import haversine_m
from cvgl.index import build_index, read_index, set_search_parameters, set_threads, write_index
from cvgl.io import (
    Progress,
    atomic_path,
    find_image_cache,
    load_image,
    read_image_cache,
    read_json,
    write_json,
    write_parquet,
)
from cvgl.models import CrossViewModel, resolve_device
from cvgl.train import model_from_checkpoint

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Columns of `retrievals.csv` / `.parquet` (one row per query and rank).
LOCALIZE_COLUMNS = ["query", "rank", "tile", "score", "lat", "lon", "distance_m"]


# ---------------------------------------------------------------------------------------------------------
# The evaluation's per-query table


def coordinates(images: pd.DataFrame, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of `ids` from a manifest's images table; NaN where it has none (or no such columns)."""
    if "lat" not in images.columns or "lon" not in images.columns:
        nan = np.full(len(ids), np.nan)
        return nan, nan.copy()
    by_id = images.drop_duplicates("image_id").set_index("image_id")
    rows = by_id.reindex(list(ids))
    return rows["lat"].to_numpy(np.float64), rows["lon"].to_numpy(np.float64)


def retrieval_table(query_ids: np.ndarray, gallery_ids: np.ndarray, top: np.ndarray, scores: np.ndarray,
                    ranks: np.ndarray, images: pd.DataFrame) -> pd.DataFrame:
    """Per query: `true_rank` (tiles scored above its true one; 0 = retrieved first), `top_ids` / `top_scores`
    (best first) and `top1_distance_m` (NaN where either end has no coordinates)."""
    gallery_ids = np.asarray(gallery_ids, dtype=object)
    q_lat, q_lon = coordinates(images, list(query_ids))
    t_lat, t_lon = coordinates(images, list(gallery_ids[top[:, 0]]))
    return pd.DataFrame({
        "ground_id": list(query_ids),
        "true_rank": ranks.astype(np.int64),
        "top_ids": [list(gallery_ids[row]) for row in top],
        "top_scores": [row.astype(np.float32) for row in scores],
        "top1_distance_m": haversine_m(q_lat, q_lon, t_lat, t_lon),
    })


# ---------------------------------------------------------------------------------------------------------
# Galleries and queries


@dataclass
class ImageSet:
    """Images to embed: named files to decode, or rows of a run's decoded cache; coordinates where known."""

    names: list[str]                   # what the output table calls each image (a path or an image id)
    lat: np.ndarray
    lon: np.ndarray
    files: list[Path] | None = None    # decode these (at the encoder's input size) ...
    cache: np.ndarray | None = None    # ... or read these already decoded rows

    def __len__(self) -> int:
        return len(self.names)


def _run_split(run: Path, view: str, split: str) -> ImageSet:
    """A run's split of one view: its decoded cache (ids sorted) and the manifest's coordinates."""
    cache = find_image_cache(run / "cache", f"{split}-{view}")
    ids, images = read_image_cache(cache)
    manifest = read_images(run / "manifest")
    if list(ids) != list(image_ids(manifest, view, split)):
        raise ValueError(f"{cache}: its ids are not the {split} {view} images of {run / 'manifest'}")
    lat, lon = coordinates(manifest, list(ids))
    return ImageSet([str(i) for i in ids], lat, lon, cache=images)


def read_gallery_csv(path: Path) -> ImageSet:
    """A gallery CSV with columns `path,lat,lon` (paths relative to the CSV's folder); errors name the line."""
    try:
        table = pd.read_csv(path, dtype={"path": str})
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable gallery CSV ({err})") from None
    missing = [c for c in ("path", "lat", "lon") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; a gallery CSV has path,lat,lon")
    for col, bound in (("lat", 90.0), ("lon", 180.0)):
        values = pd.to_numeric(table[col], errors="coerce")
        bad = ~values.between(-bound, bound)
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # 1-based, after the header
            raise ValueError(f"{path}, line {line}: {col} {table[col].iloc[line - 2]!r} is not a number in "
                             f"[-{bound:g}, {bound:g}]")
        table[col] = values
    if table["path"].isna().any() or table["path"].duplicated().any():
        line = int(np.flatnonzero((table["path"].isna() | table["path"].duplicated()).to_numpy())[0]) + 2
        raise ValueError(f"{path}, line {line}: an empty or repeated path")
    if table.empty:
        raise ValueError(f"{path}: the gallery lists no tile")
    files = [path.parent / p for p in table["path"]]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise FileNotFoundError(f"{path}: {len(absent)} listed tile(s) do not exist, e.g. {absent[0]}")
    return ImageSet(list(table["path"]), table["lat"].to_numpy(np.float64), table["lon"].to_numpy(np.float64),
                    files=files)


def gallery_set(gallery: Path, split: str) -> ImageSet:
    """`--gallery`: a CSV file or a run directory (its `split` tiles)."""
    if gallery.is_dir():
        return _run_split(gallery, "satellite", split)
    if not gallery.is_file():
        raise FileNotFoundError(f"{gallery}: --gallery is neither a gallery CSV nor a run directory")
    return read_gallery_csv(gallery)


def query_set(queries: Sequence[Path], split: str) -> ImageSet:
    """`--queries`: image files, folders of images, `.txt` lists of paths (relative to the list), or one run
    directory (its `split` panoramas). No coordinates for files: a photo's own position is what is asked."""
    if len(queries) == 1 and (queries[0] / "manifest" / "images.parquet").is_file():
        return _run_split(queries[0], "ground", split)
    files: list[Path] = []
    for q in queries:
        if q.is_dir():
            found = sorted(p for p in q.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"{q}: the query folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif q.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in q.read_text().splitlines()]
            files += [q.parent / ln for ln in lines if ln and not ln.startswith("#")]
        elif q.exists():
            files.append(q)
        else:
            raise FileNotFoundError(f"{q}: query image, folder or list does not exist")
    nan = np.full(len(files), np.nan)
    return ImageSet([str(f) for f in files], nan, nan.copy(), files=files)


# ---------------------------------------------------------------------------------------------------------
# Embedding


def decoded_batches(images: ImageSet, size_hw: tuple[int, int], batch: int, skipped: list[tuple[str, str]]
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row numbers, uint8 batch) of the images that decode; the others are appended to `skipped`."""
    for start in range(0, len(images), batch):
        if images.cache is not None:
            rows = np.arange(start, min(start + batch, len(images)))
            yield rows, np.asarray(images.cache[start:start + batch])
            continue
        assert images.files is not None
        good, pixels = [], []
        for i in range(start, min(start + batch, len(images))):
            try:
                pixels.append(load_image(images.files[i], size_hw))
                good.append(i)
            except (OSError, ValueError) as err:
                skipped.append((images.names[i], str(err).split(": ", 1)[-1]))
        if good:
            yield np.array(good), np.stack(pixels)


def embed_set(model: CrossViewModel, images: ImageSet, view: str, size: tuple[int, int], batch: int,
              device: torch.device, skipped: list[tuple[str, str]], label: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows that decoded, their L2-normalised embeddings), streamed: memory O(batch) pixels + O(N x d).
    Files are decoded at `size`, the model's input size for `view` (`model.ground_size` / `satellite_size`)."""
    if images.cache is not None and tuple(images.cache.shape[1:3]) != tuple(size):
        raise ValueError(f"{view} images: the run's cache holds {tuple(images.cache.shape[1:3])} px images, but "
                         f"the model takes {tuple(size)} (a model of another run?)")
    progress = Progress(len(images), label)
    rows, out = [], []
    for r, pixels in decoded_batches(images, size, batch, skipped):
        # No label: no line per batch; `progress` reports the whole set.
        out.append(embed_images(model, pixels, view, len(pixels), device, "", symmetries=1))
        rows.append(r)
        progress.update(len(r))
    if not out:
        return np.zeros(0, np.int64), np.zeros((0, model.ground.dim), np.float32)
    return np.concatenate(rows), np.concatenate(out)


# ---------------------------------------------------------------------------------------------------------
# The cached gallery


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gallery_key(model_path: Path, gallery: Path, images: ImageSet, factory: str) -> dict[str, str]:
    """What the cached gallery depends on: the model's bytes, the listing (names, coordinates, file sizes and
    times, or the run cache's) and the index kind. Any change rebuilds it."""
    listing = hashlib.blake2b(digest_size=16)
    listing.update(json.dumps([images.names, images.lat.tolist(), images.lon.tolist()]).encode())
    sources = images.files if images.files is not None else [gallery / "cache"]
    for f in sources:
        st = f.stat()
        listing.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return {"model": file_digest(model_path), "gallery": listing.hexdigest(), "index": factory}


def cached_gallery(out: Path, key: dict[str, str]) -> tuple[faiss.Index, pd.DataFrame] | None:
    """The index and tile table under `out` if they were built for `key`, else None."""
    key_path = out / "gallery.json"
    if not key_path.is_file() or read_json(key_path, "gallery key") != key:
        return None
    index, ids = read_index(out / "index.faiss")
    tiles = pd.read_parquet(out / "tiles.parquet")
    if list(ids) != list(tiles["tile"]):
        return None
    return index, tiles


def build_gallery(model: CrossViewModel, images: ImageSet, size: tuple[int, int], out: Path, key: dict[str, str],
                  batch: int, device: torch.device, search: str | None) -> tuple[faiss.Index, pd.DataFrame]:
    """Embed the gallery, build its index and write both (and the key last, so a crash leaves no valid cache)."""
    (out / "gallery.json").unlink(missing_ok=True)
    skipped: list[tuple[str, str]] = []
    rows, emb = embed_set(model, images, "satellite", size, batch, device, skipped, "localize gallery")
    if skipped:
        raise ValueError(f"gallery: {len(skipped)} tile(s) cannot be decoded, e.g. {skipped[0][0]}: "
                         f"{skipped[0][1]}")
    tiles = pd.DataFrame({"tile": [images.names[r] for r in rows], "lat": images.lat[rows],
                          "lon": images.lon[rows]})
    index = build_index(emb, key["index"], search)
    write_embedding_shards(list(tiles["tile"]), emb, out, "satellite")
    write_index(index, list(tiles["tile"]), out / "index.faiss")
    write_parquet(tiles, out / "tiles.parquet")
    write_json(key, out / "gallery.json")
    return index, tiles


# ---------------------------------------------------------------------------------------------------------
# The command


def localize(model_path: Path, gallery: Path, queries: Sequence[Path], out: Path, top_k: int = 5,
             factory: str = "Flat", search: str | None = None, device_name: str = "auto", batch: int = 64,
             threads: int = 1, gallery_split: str = "test", query_split: str = "test") -> pd.DataFrame:
    """Top-`top_k` tiles of every query; writes `<out>/retrievals.{csv,parquet}` and `<out>/skipped.csv`."""
    torch.set_num_threads(max(1, threads))
    set_threads(max(1, threads))
    device = resolve_device(device_name)
    model, ckpt = model_from_checkpoint(model_path, device)
    sizes = {v: tuple(ckpt["config"]["model"][f"{v}_size"]) for v in ("ground", "satellite")}
    tiles_set = gallery_set(gallery, gallery_split)
    query_images = query_set(queries, query_split)
    key = gallery_key(model_path, gallery, tiles_set, factory)
    cached = cached_gallery(out / "gallery", key)
    if cached is None:
        print(f"[localize] building the gallery of {len(tiles_set)} tiles ({factory})", file=sys.stderr)
        index, tiles = build_gallery(model, tiles_set, sizes["satellite"], out / "gallery", key, batch, device,
                                     search)
    else:
        print(f"[localize] reusing the gallery in {out / 'gallery'} ({len(cached[1])} tiles)", file=sys.stderr)
        index, tiles = cached
        set_search_parameters(index, search)
    skipped: list[tuple[str, str]] = []
    rows, emb = embed_set(model, query_images, "ground", sizes["ground"], batch, device, skipped,
                          "localize queries")
    k = min(top_k, index.ntotal)
    scores, found = index.search(emb, k) if len(emb) else (np.zeros((0, k), np.float32), np.zeros((0, k), int))
    table = localize_table(query_images, rows, found, scores, tiles)
    write_parquet(table, out / "retrievals.parquet")
    with atomic_path(out / "retrievals.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "skipped.csv") as tmp:
        pd.DataFrame(skipped, columns=["file", "reason"]).to_csv(tmp, index=False)
    print(f"[localize] {len(rows)} queries, top {k} each -> {out / 'retrievals.parquet'}"
          + (f"; {len(skipped)} unreadable, listed in {out / 'skipped.csv'}" if skipped else ""), file=sys.stderr)
    if 0 < len(table) <= PRINTED_ROWS:  # a few photos: the answer on the terminal too
        print(table.to_string(index=False))
    return table


#: `localize` prints its table when it has at most this many rows (ten queries at the default top 5).
PRINTED_ROWS = 50


def localize_table(queries: ImageSet, rows: np.ndarray, found: np.ndarray, scores: np.ndarray,
                   tiles: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, rank 1..k): the tile, its score and coordinates, and the distance to the query's
    own coordinates where both are known. FAISS pads missing neighbours with -1; those rows are dropped."""
    k = found.shape[1] if found.ndim == 2 else 0
    q = np.repeat(rows, k)
    f = found.reshape(-1)
    ok = f >= 0
    q, f, rank = q[ok], f[ok], np.tile(np.arange(1, k + 1), len(rows))[ok]
    t_lat, t_lon = tiles["lat"].to_numpy(np.float64)[f], tiles["lon"].to_numpy(np.float64)[f]
    table = pd.DataFrame({
        "query": [queries.names[i] for i in q],
        "rank": rank.astype(np.int64),
        "tile": tiles["tile"].to_numpy(dtype=object)[f],
        "score": scores.reshape(-1)[ok].astype(np.float32),
        "lat": t_lat,
        "lon": t_lon,
        "distance_m": haversine_m(queries.lat[q], queries.lon[q], t_lat, t_lon),
    })
    return table[LOCALIZE_COLUMNS]
