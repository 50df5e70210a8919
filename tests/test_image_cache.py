"""The two kinds of image cache, decoded pixels (`data.cache: true`) and a list of files decoded at every read
(`data.cache: false`), give the stages the same rows, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cvgl.data.stages import cache_stage
from cvgl.io import (
    DecodedImages,
    cache_image_files,
    find_image_cache,
    load_images,
    read_image_cache,
    write_file_list,
    write_image_cache,
)


def image_files(folder: Path, n: int) -> list[Path]:
    """n JPEGs of random content at 40x70 (decoding and resizing them is where the two caches could differ)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def test_a_file_list_reads_the_rows_a_pixel_cache_holds(tmp_path: Path) -> None:
    paths = image_files(tmp_path / "images", 7)
    ids = [f"id{i}" for i in range(7)]
    cache_image_files(paths, ids, (16, 32), tmp_path / "train-ground.npy")
    write_file_list(paths, ids, (16, 32), tmp_path / "train-ground.files.parquet")
    cached_ids, pixels = read_image_cache(tmp_path / "train-ground.npy")
    listed_ids, decoded = read_image_cache(tmp_path / "train-ground.files.parquet", threads=3)
    assert isinstance(decoded, DecodedImages) and list(listed_ids) == list(cached_ids) == ids
    assert decoded.shape == pixels.shape and decoded.dtype == pixels.dtype and len(decoded) == 7
    rows = np.array([5, 0, 5, 2])
    for key in (3, slice(1, 6), slice(6, 2, -2), rows, np.arange(7) % 2 == 0, np.array([], dtype=int)):
        np.testing.assert_array_equal(decoded[key], pixels[key])
    np.testing.assert_array_equal(np.asarray(decoded), pixels)
    _, loaded = read_image_cache(tmp_path / "train-ground.files.parquet", mmap=False)
    assert isinstance(loaded, np.ndarray)
    np.testing.assert_array_equal(loaded, pixels)


def test_a_file_list_names_a_missing_image_when_it_is_written(tmp_path: Path) -> None:
    paths = image_files(tmp_path / "images", 3)
    paths[1].unlink()
    with pytest.raises(FileNotFoundError, match=r"001\.jpg: image file does not exist \(1 of 3 missing\)"):
        write_file_list(paths, ["a", "b", "c"], (16, 32), tmp_path / "x.files.parquet")
    assert not (tmp_path / "x.files.parquet").exists()


def test_the_cache_stage_writes_the_kind_its_output_names(tmp_path: Path) -> None:
    """`cvgl cache --out X.npy` decodes; `--out X.files.parquet` lists (the rule picks by `data.cache`); a
    localize run directory finds whichever the run wrote."""
    paths = image_files(tmp_path / "root" / "panos", 4)
    (tmp_path / "manifest").mkdir()
    pd.DataFrame({"image_id": [f"g{i}" for i in range(4)], "view": "ground", "split": "train",
                  "path": [str(p.relative_to(tmp_path / "root")) for p in paths]}).to_parquet(
        tmp_path / "manifest" / "images.parquet")
    for name in ("train-ground.npy", "train-ground.files.parquet"):
        cache_stage(tmp_path / "manifest", tmp_path / "root", "ground", "train", (8, 16), tmp_path / "cache" / name, 1)
    assert find_image_cache(tmp_path / "cache", "train-ground").name == "train-ground.npy"
    (tmp_path / "cache" / "train-ground.npy").unlink()
    found = find_image_cache(tmp_path / "cache", "train-ground")
    assert found.name == "train-ground.files.parquet"
    np.testing.assert_array_equal(read_image_cache(found)[1][:], np.stack([
        np.asarray(Image.open(p).convert("RGB").resize((16, 8), Image.BILINEAR)) for p in paths]))


def test_a_pixel_cache_written_in_chunks_is_the_file_np_save_writes(tmp_path: Path) -> None:
    """Chunks appended after the header (3 images at a time, the last one short) make the bytes of one np.save of
    the whole decoded array, and the cache reads back memory-mapped."""
    paths = image_files(tmp_path / "images", 7)
    ids = [f"id{i}" for i in range(7)]
    cache_image_files(paths, ids, (16, 32), tmp_path / "chunked.npy", threads=2, chunk=3)
    write_image_cache(load_images(paths, (16, 32), 1), ids, tmp_path / "whole.npy")
    assert (tmp_path / "chunked.npy").read_bytes() == (tmp_path / "whole.npy").read_bytes()
    read_ids, pixels = read_image_cache(tmp_path / "chunked.npy")
    assert list(read_ids) == ids and isinstance(pixels, np.memmap) and pixels.shape == (7, 16, 32, 3)
