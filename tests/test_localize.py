"""`cvgl localize` and the evaluation's per-query table on the tiny workflow run, and the localize pieces on
their own: gallery CSVs, query lists with broken images, the cached gallery and the FAISS agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cvgl.cli import main
from cvgl.localize import LOCALIZE_COLUMNS, query_set, read_gallery_csv
from tests.dag import copy_run, run_ok


def _truth(res: Path) -> pd.Series:
    truth = pd.read_parquet(res / "manifest/truth.parquet")
    return truth[truth.kind == "positive"].set_index("ground_id").satellite_id


def test_evaluation_writes_one_row_per_test_query_that_agrees_with_its_recall(tiny_run: Path) -> None:
    res = tiny_run / "results" / "tiny"
    metrics = json.loads((res / "round-2/metrics.json").read_text())
    table = pd.read_parquet(res / "round-2/retrievals.parquet")
    assert len(table) == metrics["queries"] and table.ground_id.is_unique
    assert np.isclose((table.true_rank == 0).mean(), metrics["R@1"])
    assert np.isclose((table.true_rank < 5).mean(), metrics["R@5"])
    pos = _truth(res)
    top1_true = np.array([row[0] == pos[g] for g, row in zip(table.ground_id, table.top_ids, strict=True)])
    assert np.array_equal(top1_true, table.true_rank.to_numpy() == 0)
    assert all(np.all(np.diff(s) <= 0) for s in table.top_scores)  # best first


def test_localize_a_run_split_finds_the_true_tile_as_often_as_its_recall_says(tiny_run: Path, tmp_path: Path
                                                                              ) -> None:
    res = tiny_run / "results" / "tiny"
    out = tmp_path / "localized"
    assert main(["localize", "--model", str(res / "round-2/model.pt"), "--gallery", str(res),
                 "--queries", str(res), "--out", str(out), "--top-k", "3"]) == 0
    table = pd.read_parquet(out / "retrievals.parquet")
    assert list(table.columns) == LOCALIZE_COLUMNS
    assert pd.read_csv(out / "retrievals.csv").shape == table.shape
    metrics = json.loads((res / "round-2/metrics.json").read_text())
    top1 = table[table["rank"] == 1].set_index("query").tile
    assert len(top1) == metrics["queries"]
    pos = _truth(res)
    assert np.isclose(np.mean([top1[q] == pos[q] for q in top1.index]), metrics["R@1"])
    # The same tiles as the evaluation's own top-3, in the same order, apart from exact score ties.
    ev = pd.read_parquet(res / "round-2/retrievals.parquet").set_index("ground_id")
    agree = np.mean([list(g.tile) == list(ev.top_ids[q][:3]) for q, g in table.groupby("query")])
    assert agree >= 0.9


def test_a_second_localize_reuses_the_gallery_and_a_new_model_rebuilds_it(tiny_run: Path, tmp_path: Path,
                                                                          capfd) -> None:
    res = tiny_run / "results" / "tiny"
    out = tmp_path / "localized-twice"
    args = ["localize", "--gallery", str(res), "--queries", str(res), "--out", str(out)]
    assert main([*args, "--model", str(res / "round-2/model.pt")]) == 0
    assert "building the gallery" in capfd.readouterr().err
    index_mtime = (out / "gallery/index.faiss").stat().st_mtime_ns
    first = pd.read_parquet(out / "retrievals.parquet")
    assert main([*args, "--model", str(res / "round-2/model.pt")]) == 0
    assert "reusing the gallery" in capfd.readouterr().err
    assert (out / "gallery/index.faiss").stat().st_mtime_ns == index_mtime
    pd.testing.assert_frame_equal(pd.read_parquet(out / "retrievals.parquet"), first)
    assert main([*args, "--model", str(res / "round-1/model.pt")]) == 0
    assert "building the gallery" in capfd.readouterr().err


def test_localize_files_skips_and_lists_broken_queries(tiny_run: Path, tmp_path: Path, capsys) -> None:
    """A gallery CSV of tile files and a folder of query photos, two of them broken; the few rows are printed."""
    res = tiny_run / "results" / "tiny"
    tiles = np.load(res / "cache/test-satellite.npy")
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for i, img in enumerate(tiles[:6]):
        Image.fromarray(img).save(gallery / f"t{i}.png")
    pd.DataFrame({"path": [f"t{i}.png" for i in range(6)], "lat": np.linspace(-10, 10, 6),
                  "lon": np.linspace(170, 179, 6)}).to_csv(gallery / "tiles.csv", index=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    grounds = np.load(res / "cache/test-ground.npy")
    for i in range(3):
        Image.fromarray(grounds[i]).save(photos / f"q{i}.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["localize", "--model", str(res / "round-2/model.pt"), "--gallery", str(gallery / "tiles.csv"),
                 "--queries", str(photos), "--out", str(out), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    table = pd.read_parquet(out / "retrievals.parquet")
    assert len(printed) == 1 + len(table) and printed[0].split() == list(table.columns)  # header + one line a row
    assert sorted(set(table["query"])) == sorted(str(photos / f"q{i}.jpg") for i in range(3))
    assert len(table) == 6 and set(table["rank"]) == {1, 2}
    assert set(table.tile) <= {f"t{i}.png" for i in range(6)} and table.lat.between(-10, 10).all()
    assert table.distance_m.isna().all()  # a photo's own position is unknown
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(Path(f).name for f in skipped.file) == ["broken.jpg", "empty.png"]


def test_localize_is_a_snakemake_target(tiny_run: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    copy_run(tiny_run, work)  # the shared run stays as it was made
    run_ok(work, "--config", "localize={demo: {gallery: results/tiny, queries: results/tiny}}",
           "--", "results/tiny/localize/demo/retrievals.parquet")
    table = pd.read_parquet(work / "results/tiny/localize/demo/retrievals.parquet")
    assert set(table["rank"]) == {1, 2, 3, 4, 5}
    assert (work / "results/tiny/localize/demo/gallery/index.faiss").exists()


def test_gallery_csv_errors_name_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    csv = tmp_path / "tiles.csv"
    csv.write_text("path,lat,lon\na.png,10,20\na.png,91,20\n")
    with pytest.raises(ValueError, match=r"tiles.csv, line 3: lat"):
        read_gallery_csv(csv)
    csv.write_text("path,lat\na.png,10\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['lon'\]"):
        read_gallery_csv(csv)
    csv.write_text("path,lat,lon\nb.png,10,20\n")
    with pytest.raises(FileNotFoundError, match="b.png"):
        read_gallery_csv(csv)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        query_set([tmp_path / "nowhere.jpg"], "test")
