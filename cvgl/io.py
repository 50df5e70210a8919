"""Atomic file writing, image decoding and the decoded-image cache.

Every artifact goes through a temporary sibling path and `os.replace`, so a crash never leaves a file that
looks complete. Images are decoded once into uint8 arrays (`.npy`, memory-mappable) because training and
every round's embedding pass read the same pixels again and again.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


#: What reading a damaged file raises in numpy, pyarrow, pickle, torch, zipfile, FAISS and json.
READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError,
               zipfile.BadZipFile, pa.ArrowException)


@contextlib.contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn a library's error while reading `path` into one line naming the file and what it should be
    (a truncated cache, a corrupt table, a file of another kind), instead of a bare message or a traceback."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} does not exist")
    try:
        yield
    except READ_ERRORS as err:
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ValueError(f"{path}: not a readable {what} ({type(err).__name__}"
                         f"{': ' + detail if detail else ''})") from None


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write a table atomically and byte-reproducibly (no pandas index, no varying metadata)."""
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a table, naming the file and the missing columns if it is not what the caller expects."""
    path = Path(path)
    with reading(path, "parquet table"):
        df = pq.read_table(path).to_pandas()
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def write_json(obj: object, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    with reading(path, what):
        return json.loads(Path(path).read_text())


#: Pillow options per suffix of an intermediate image: PNG is lossless; JPEG at quality 95 is 4-5x smaller and
#: ~30x faster to encode at 750 px, its error far below what the resize to the model's input keeps.
IMAGE_FORMATS = {".png": {"format": "PNG"}, ".jpg": {"format": "JPEG", "quality": 95}}


def save_image(array: np.ndarray, path: str | Path) -> None:
    """Save an HxWx3 uint8 array as PNG or JPEG, by the suffix of `path` (`IMAGE_FORMATS`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"{path}: intermediate images are saved as {sorted(IMAGE_FORMATS)}, not {suffix!r}")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, **IMAGE_FORMATS[suffix])


def load_image(path: str | Path, size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to HxWx3 uint8, resized (bilinear) to `size_hw` if given; errors name the file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size_hw is not None and im.size != (size_hw[1], size_hw[0]):
                im = im.resize((size_hw[1], size_hw[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file does not exist") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot decode image ({err})") from None


def load_images(paths: Sequence[str | Path], size_hw: tuple[int, int], threads: int = 2,
                label: str | None = None) -> np.ndarray:
    """Decode many images in parallel into one (N,H,W,3) uint8 array (progress shown if `label` is given)."""
    out = np.empty((len(paths), size_hw[0], size_hw[1], 3), dtype=np.uint8)
    load_images_into(out, paths, size_hw, threads, Progress(len(paths), label) if label else None)
    return out


def load_images_into(out: np.ndarray, paths: Sequence[str | Path], size_hw: tuple[int, int], threads: int,
                     progress: Progress | None = None) -> None:
    """Decode `paths` in parallel into the rows of `out`, each image stored as soon as it is decoded."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, img in enumerate(pool.map(lambda p: load_image(p, size_hw), paths)):
            out[i] = img
            if progress:
                progress.update(1)


def write_image_cache(images: np.ndarray, ids: Sequence[str], path: str | Path) -> None:
    """Store decoded images as `<path>` (.npy) plus `<path>.ids.parquet` (row i = image i)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, images)
    write_ids_sidecar(ids, path)


#: Images decoded and written per step of `cache_image_files`: its memory, whatever the split's size.
CACHE_CHUNK = 256


def cache_image_files(paths: Sequence[str | Path], ids: Sequence[str], size_hw: tuple[int, int], path: str | Path,
                      threads: int = 2, label: str | None = None, chunk: int = CACHE_CHUNK) -> None:
    """Decode image files straight into the cache `write_image_cache` would write (same bytes), `chunk` images at
    a time appended to the `.npy` after its header: memory O(chunk), not O(N), and no half-written cache after a
    crash. Written through the file, not a map: a map's dirty pages count as the job's own memory until the
    kernel writes them back, which at VIGOR's sizes grew the job's RSS with the cache."""
    if len(paths) != len(ids):
        raise ValueError(f"{path}: {len(paths)} image files for {len(ids)} ids")
    path = Path(path)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(paths), *size_hw, 3)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for images in decoded_chunks(paths, size_hw, threads, label, chunk):
            fh.write(np.ascontiguousarray(images, dtype=np.uint8).data)  # the chunk's own buffer, no copy
    write_ids_sidecar(ids, path)


def decode_to_memmap(paths: Sequence[str | Path], size_hw: tuple[int, int], threads: int = 2,
                     label: str | None = None, chunk: int = CACHE_CHUNK) -> np.ndarray:
    """Decode image files into an (N, H, W, 3) uint8 array backed by an anonymous temporary file ($TMPDIR),
    `chunk` images at a time: the pages are the file's, so the OS can evict them and memory stays O(chunk)."""
    out = np.memmap(tempfile.TemporaryFile(), dtype=np.uint8, mode="w+", shape=(len(paths), *size_hw, 3))
    decode_into(out, paths, size_hw, threads, label, chunk)
    return out


def decode_into(out: np.ndarray, paths: Sequence[str | Path], size_hw: tuple[int, int], threads: int,
                label: str | None, chunk: int) -> None:
    """Decode `paths` into the rows of `out` (a map), `chunk` images at a time (progress shown with `label`)."""
    start = 0
    for images in decoded_chunks(paths, size_hw, threads, label, chunk):
        out[start:start + len(images)] = images
        start += len(images)


def decoded_chunks(paths: Sequence[str | Path], size_hw: tuple[int, int], threads: int, label: str | None,
                   chunk: int) -> Iterator[np.ndarray]:
    """`paths` decoded at `size_hw`, `chunk` images per array, in order (progress shown with `label`).

    Every chunk is decoded into the same buffer, so a caller must copy a chunk out before asking for the next:
    one chunk's pixels in memory, not the one being decoded plus the one a loop variable still holds."""
    progress = Progress(len(paths), label) if label else None
    buffer = np.empty((min(chunk, len(paths)), *size_hw, 3), dtype=np.uint8)
    for start in range(0, len(paths), chunk):
        part = paths[start:start + chunk]
        load_images_into(buffer[:len(part)], part, size_hw, threads)
        yield buffer[:len(part)]
        if progress:
            progress.update(len(part))


class RowBuffer:
    """A growing stack of equally shaped uint8 images kept in an anonymous temporary file ($TMPDIR), not in
    memory: `append` writes a batch, `array()` maps them all (N, H, W, 3) without reading them."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.rows = 0
        self.row_shape: tuple[int, ...] | None = None

    def append(self, images: np.ndarray) -> None:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if self.row_shape is None:
            self.row_shape = images.shape[1:]
        elif images.shape[1:] != self.row_shape:
            raise ValueError(f"cannot append images of shape {images.shape[1:]} to rows of {self.row_shape}")
        self.file.write(images.tobytes())
        self.rows += len(images)

    def array(self) -> np.ndarray:
        if self.row_shape is None or self.rows == 0:
            return np.empty((0, 0, 0, 3), np.uint8)
        self.file.flush()
        return np.memmap(self.file, dtype=np.uint8, mode="r", shape=(self.rows, *self.row_shape))


class StackedRows:
    """Two image arrays indexed as one (rows of `first`, then rows of `second`) without copying either:
    `stack[rows]` gathers only the rows asked for, as `np.concatenate([first, second])[rows]` would."""

    def __init__(self, first: np.ndarray, second: np.ndarray) -> None:
        if first.shape[1:] != second.shape[1:] or first.dtype != second.dtype:
            raise ValueError(f"cannot stack images of shape {first.shape[1:]} {first.dtype} and "
                             f"{second.shape[1:]} {second.dtype}")
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])
        self.dtype = first.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        low = rows < len(self.first)
        out[low] = self.first[rows[low]]
        out[~low] = self.second[rows[~low] - len(self.first)]
        return out


#: The suffix of an image cache that lists files instead of holding pixels (`data.cache: false`).
FILE_LIST_SUFFIX = ".files.parquet"


def is_file_list(path: str | Path) -> bool:
    return Path(path).name.endswith(FILE_LIST_SUFFIX)


class DecodedImages:
    """A split's images decoded from their files at every read, at one size: an image cache's interface (`len`,
    `shape`, `dtype`, rows by index, slice, index array or mask) with no pixels on disk (`data.cache: false`).
    A row is the same bytes as the cache's, since both decode with `load_image`; a read of many rows decodes
    them on `threads` threads (Pillow's decoders release the GIL)."""

    def __init__(self, paths: Sequence[str | Path], size_hw: tuple[int, int], threads: int = 2) -> None:
        self.paths = np.asarray([str(p) for p in paths], dtype=object)
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.threads = threads
        self.shape = (len(self.paths), *self.size_hw, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return load_image(self.paths[key], self.size_hw)
        return load_images(list(self.paths[key]), self.size_hw, self.threads)  # no rows: an empty (0, H, W, 3)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """Every row decoded (O(N) memory: for small splits and code that wants a whole array)."""
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def find_image_cache(folder: Path, name: str) -> Path:
    """`<folder>/<name>.npy`, or the file list `<name>.files.parquet` a run with `data.cache: false` wrote."""
    listed = folder / f"{name}{FILE_LIST_SUFFIX}"
    return listed if listed.exists() and not (folder / f"{name}.npy").exists() else folder / f"{name}.npy"


def write_file_list(paths: Sequence[str | Path], ids: Sequence[str], size_hw: tuple[int, int],
                    path: str | Path) -> None:
    """The `data.cache: false` cache: `<path>` (.files.parquet) lists each image's id, absolute file and the size
    it is decoded to, plus the same ids sidecar as a pixel cache. Every file must exist now, not hours later."""
    if len(paths) != len(ids):
        raise ValueError(f"{path}: {len(paths)} image files for {len(ids)} ids")
    files = [str(Path(p).resolve()) for p in paths]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: image file does not exist ({len(missing)} of {len(files)} missing)")
    write_parquet(pd.DataFrame({"image_id": list(ids), "path": files, "height": int(size_hw[0]),
                                "width": int(size_hw[1])}), path)
    write_ids_sidecar(ids, path)


def read_file_list(path: Path, threads: int) -> tuple[np.ndarray, DecodedImages]:
    table = read_parquet(path, ["image_id", "path", "height", "width"])
    sizes = table[["height", "width"]].drop_duplicates()
    if len(sizes) > 1:
        raise ValueError(f"{path}: images listed at {len(sizes)} sizes; a cache holds one")
    size = (int(sizes.height.iloc[0]), int(sizes.width.iloc[0])) if len(sizes) else (0, 0)
    return table.image_id.to_numpy(dtype=object), DecodedImages(table.path.tolist(), size, threads)


def ids_sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".ids.parquet")


def write_ids_sidecar(ids: Sequence[str], path: str | Path) -> None:
    """`<path>.ids.parquet`: the image id of each row of the array (or list) at `path`."""
    write_parquet(pd.DataFrame({"image_id": list(ids)}), ids_sidecar(path))


def read_image_cache(path: str | Path, mmap: bool = True,
                     threads: int = 2) -> tuple[np.ndarray, np.ndarray | DecodedImages]:
    """Return (ids, images) of a cache written by `write_image_cache` (images memory-mapped; `mmap=False` reads
    them into memory) or, for a `.files.parquet` list (`write_file_list`), images decoded at each read on
    `threads` threads (`DecodedImages`; `mmap=False` decodes them all now)."""
    path = Path(path)
    if is_file_list(path):
        ids, decoded = read_file_list(path, threads)
        return ids, (decoded if mmap else np.asarray(decoded))
    ids = read_parquet(ids_sidecar(path), ["image_id"])["image_id"].to_numpy(dtype=object)
    with reading(path, "image cache (.npy of uint8 images)"):
        images = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{path}: not an image cache: expected (N, H, W, 3) uint8, got {images.shape} "
                         f"{images.dtype}")
    if len(images) != len(ids):
        raise ValueError(f"{path}: {len(images)} images but {len(ids)} ids in its sidecar")
    return ids, images


class Progress:
    """A dependency-free progress line on stderr, at most every ~5% (logs stay short); silent without a label."""

    def __init__(self, total: int, label: str, step: float = 0.05) -> None:
        self.total, self.label, self.done = max(1, total), label, 0
        self.every = max(1, int(self.total * step))
        self.start = time.perf_counter()
        self.next = self.every

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        if self.label and (self.done >= self.next or self.done >= self.total):
            self.next = self.done + self.every
            elapsed = time.perf_counter() - self.start
            rate = self.done / max(elapsed, 1e-9)
            print(f"[{self.label}] {self.done}/{self.total} ({100 * self.done / self.total:.0f}%) "
                  f"{elapsed:.1f}s {rate:.1f}/s {extra}".rstrip(), file=sys.stderr, flush=True)
