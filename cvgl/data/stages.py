"""The data stages: a dataset listed as manifests, and a split's images decoded into a cache. They import no
torch, so these jobs (one per split and view) start in about a second."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cvgl.config import with_section_defaults
from cvgl.data.manifest import image_ids, read_images, with_coordinates, write_manifests
from cvgl.data.registry import dataset_for
from cvgl.io import cache_image_files, is_file_list, write_file_list


def manifest_stage(dataset_cfg: dict[str, Any], root: Path, gt_ratio: float, seed: int, out_dir: Path) -> None:
    """List a dataset (in its published layout) as the design's manifests (+ `skipped.csv`).

    `dataset_cfg` is the `dataset` section (keys left out take the schema's defaults) with `layout`, the
    synthetic world's: the world is written in a published layout and read by that layout's adapter. The
    dataset registry (`cvgl.data.registry`) knows how each layout is read."""
    dataset = with_section_defaults(dataset_cfg, "dataset")
    entry = dataset_for(dataset, {"layout": dataset.get("layout")})
    manifests = entry.build(Path(root), dataset, gt_ratio, seed)
    write_manifests(manifests, out_dir)
    counts = manifests.images.groupby(["split", "view"]).size().to_dict()
    located = int(with_coordinates(manifests.images)[["lat", "lon"]].notna().all(axis=1).sum())
    print(f"[manifest] {counts}; labeled pairs: {len(manifests.labeled)}; skipped entries: "
          f"{len(manifests.skipped)} (see {out_dir / 'skipped.csv'}); coordinates: {located} of "
          f"{len(manifests.images)} images (from {entry.coordinates})", file=sys.stderr)


def cache_stage(manifest_dir: Path, root: Path, view: str, split: str, size_hw: tuple[int, int], out: Path,
                threads: int) -> None:
    """Decode one (view, split) once, at the model's input size, rows in image-id order; or, when `out` is a
    `.files.parquet` (`data.cache: false`), list the files that every later read decodes again."""
    images = read_images(manifest_dir)
    ids = image_ids(images, view, split)
    if len(ids) == 0:
        raise ValueError(f"{manifest_dir}/images.parquet: no {view} images in split {split}")
    rel = images.set_index("image_id").loc[ids, "path"]
    files = [Path(root) / p for p in rel]
    if is_file_list(out):
        write_file_list(files, ids, tuple(size_hw), out)
        return
    cache_image_files(files, ids, tuple(size_hw), out, threads, f"cache {split}-{view}")
