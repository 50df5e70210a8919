"""The dataset registry: each dataset's split files, manifests, paper defaults and coordinates in one table, and
the synthetic world read as the dataset whose layout it is written in."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvgl.data import registry
from cvgl.data.stages import manifest_stage
from tests.fixtures import write_cvusa_fixture, write_vigor_fixture


def test_every_dataset_the_schema_accepts_has_an_entry() -> None:
    from cvgl.config import schema_node

    assert set(schema_node("dataset", "name")["enum"]) == set(registry.NAMES)
    assert set(schema_node("synth", "layout")["enum"]) == set(registry.DATASETS)


def test_the_synthetic_world_is_read_as_its_layout() -> None:
    assert registry.layout_of({"name": "synth"}, {}) == "cvusa"  # the world's own default layout
    assert registry.dataset_for({"name": "synth"}, {"layout": "vigor"}).name == "vigor"
    assert registry.layout_of({"name": "cvact"}, {"layout": "vigor"}) == "cvact"  # real data: its own layout
    with pytest.raises(ValueError, match="dataset.name must be one of synth, cvusa, cvact, vigor; got 'kitti'"):
        registry.layout_of({"name": "kitti"})


def test_the_papers_values_per_dataset() -> None:
    paper = {name: entry.paper for name, entry in registry.DATASETS.items()}
    assert (paper["cvusa"].t0, paper["cvact"].t0, paper["vigor"].t0) == (0.05, 0.025, 0.035)
    assert paper["cvusa"].project() == {"pano_size": [224, 1232], "size": 750, "fov_deg": 175.0, "band": True}
    assert not paper["cvact"].band and paper["vigor"].size == 640


def test_split_files_are_the_manifests_inputs_and_a_missing_one_is_named(tmp_path: Path) -> None:
    write_cvusa_fixture(tmp_path / "CVUSA", n_train=3, n_test=2)
    assert registry.split_files("cvusa", tmp_path / "CVUSA") == [tmp_path / "CVUSA/splits/train-19zl.csv",
                                                                 tmp_path / "CVUSA/splits/val-19zl.csv"]
    (tmp_path / "CVUSA/splits/val-19zl.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset.root: .*val-19zl\.csv does not exist \(cvusa layout"):
        registry.split_files("cvusa", tmp_path / "CVUSA")
    with pytest.raises(FileNotFoundError, match="no VIGOR split files under"):
        registry.split_files("vigor", tmp_path)
    write_vigor_fixture(tmp_path / "VIGOR", cities=("Chicago",), n_tiles=8, n_train={"Chicago": 6}, n_test=4)
    files = registry.split_files("vigor", tmp_path / "VIGOR")
    assert files and all(f.parent.name == "Chicago" and f.suffix == ".txt" for f in files)


def test_the_manifest_stage_asks_the_registry_and_logs_the_coordinates(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "VIGOR"
    write_vigor_fixture(root, cities=("Chicago",), n_tiles=8, n_train={"Chicago": 6}, n_test=4)
    manifest_stage({"name": "vigor"}, root, 0.0, 0, tmp_path / "manifest")  # cities null: every city under splits/
    err = capsys.readouterr().err
    assert "coordinates:" in err and "from the file names" in err
    assert (tmp_path / "manifest" / "images.parquet").exists()
    assert registry.vigor_cities(root, {"cities": None}) == ("Chicago",)
