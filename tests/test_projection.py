"""Panorama files to BEV PNGs on worker processes (cvgl.projection): same bytes as in-process, errors named."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvgl.geometry import project_to_bev, to_uint8
from cvgl.io import load_image
from cvgl.projection import bev_images, project_files

PANO_HW, SIZE = (23, 128), 32


def _write_panoramas(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = [root / f"{i}.jpg" for i in range(n)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (*PANO_HW, 3), dtype=np.uint8)).save(path, quality=90)
    return paths


def test_bev_images_equal_rounding_after_the_channel_move():
    bev = torch.rand(2, 3, 8, 8) * 300 - 20
    assert np.array_equal(bev_images(bev), to_uint8(bev.permute(0, 2, 3, 1)))


def test_workers_write_the_same_bytes_as_one_process(tmp_path):
    sources = _write_panoramas(tmp_path, 5)
    outputs = {}
    for workers, batch in ((1, 5), (2, 2)):
        (tmp_path / f"w{workers}").mkdir()
        outputs[workers] = [tmp_path / f"w{workers}" / f"{i}.png" for i in range(len(sources))]
        project_files(sources, outputs[workers], PANO_HW, SIZE, 175.0, True, batch, workers)
    assert [p.read_bytes() for p in outputs[1]] == [p.read_bytes() for p in outputs[2]]
    pano = torch.from_numpy(load_image(sources[3]).copy()).permute(2, 0, 1)[None].float()
    expected = to_uint8(project_to_bev(pano, SIZE, 175.0, True).permute(0, 2, 3, 1))[0]
    assert np.array_equal(load_image(outputs[2][3]), expected)


def test_a_missing_panorama_is_named(tmp_path):
    sources = _write_panoramas(tmp_path, 4)
    sources[2].unlink()
    targets = [tmp_path / f"{i}.png" for i in range(4)]
    with pytest.raises(FileNotFoundError, match="2.jpg"):
        project_files(sources, targets, PANO_HW, SIZE, 175.0, True, 1, 2)
    with pytest.raises(ValueError, match="targets"):
        project_files(sources, targets[:3], PANO_HW, SIZE, 175.0, True, 1, 2)


def test_the_suffix_picks_a_lossless_png_or_a_close_jpeg(tmp_path):
    from cvgl.io import save_image

    rng = np.random.default_rng(3)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((96, 96)))
    save_image(smooth, tmp_path / "a.png")
    save_image(smooth, tmp_path / "a.jpg")
    assert np.array_equal(load_image(tmp_path / "a.png"), smooth)
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.format == "JPEG"
    assert np.abs(load_image(tmp_path / "a.jpg").astype(int) - smooth).mean() < 2.0  # quality 95
    with pytest.raises(ValueError, match="a.tif"):
        save_image(smooth, tmp_path / "a.tif")
    assert not (tmp_path / "a.tif").exists()


def test_translations_keep_the_projections_format(tmp_path):
    """project_stage writes `project.format`; translate_stage keeps that suffix and the ground ids."""
    import pandas as pd

    from cvgl.io import write_image_cache, write_parquet
    from cvgl.pipeline import translate_stage

    projected, translated = tmp_path / "projected", tmp_path / "translated"
    projected.mkdir()
    rng = np.random.default_rng(4)
    ids = ["g2", "g0", "g1"]
    for gid in ids:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(projected / f"{gid}.jpg")
    write_parquet(pd.DataFrame({"ground_id": ids, "path": [f"{g}.jpg" for g in ids]}), projected / "index.parquet")
    np.save(projected / "valid-mask.npy", np.ones((16, 16), bool))
    write_image_cache(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), ["s0", "s1", "s2", "s3"],
                      tmp_path / "sat.npy")
    translate_stage(projected, tmp_path / "sat.npy", "colour", tmp_path / "translator.pt", translated,
                    batch=2, threads=2)
    index = pd.read_parquet(translated / "index.parquet")
    assert list(index.ground_id) == ids and list(index.path) == [f"{g}.jpg" for g in ids]
    assert all((translated / p).exists() for p in index.path)
