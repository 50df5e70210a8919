"""Every artifact a stage reads fails with its path and what is wrong when it is truncated, corrupt or of another
kind: one line from the command, never a bare library message or a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cvgl.embed_io import read_embeddings, write_embedding_shards
from cvgl.index import build_index, read_index, write_index
from cvgl.io import read_image_cache, read_json, write_image_cache, write_json
from cvgl.label_table import LABEL_COLUMNS, read_label_table
from cvgl.train import load_checkpoint


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


def image_cache(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    path = tmp / "train-ground.npy"
    write_image_cache(np.zeros((4, 8, 8, 3), np.uint8), ["a", "b", "c", "d"], path)
    return path, read_image_cache


def checkpoint(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    path = tmp / "model.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "optimizer": None, "epoch": 1, "config": {}}, path)
    return path, load_checkpoint


def embeddings(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    write_embedding_shards(["a", "b"], np.eye(2, 64, dtype=np.float32), tmp / "emb", "ground")
    return tmp / "emb" / "ground-0000.parquet", lambda p: read_embeddings(p.parent, "ground")


def label_table(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    path = tmp / "labels.parquet"
    row = {"ground_id": "g", "satellite_id": "s", "score": 0.5, "second_score": 0.4, "margin": 0.1, "mutual": True,
           "threshold": 0.05, "kept": True, "source": "pseudo", "correct": None}
    pd.DataFrame([row] * 50, columns=list(LABEL_COLUMNS)).to_parquet(path)
    return path, read_label_table


def faiss_index(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    path = tmp / "train-satellite.faiss"
    write_index(build_index(np.eye(8, 16, dtype=np.float32), "Flat"), [str(i) for i in range(8)], path)
    return path, read_index


def metrics(tmp: Path) -> tuple[Path, Callable[[Path], object]]:
    path = tmp / "metrics.json"
    write_json({"round": 0, "R@1": 0.5}, path)
    return path, read_json


ARTIFACTS = {"image cache": image_cache, "checkpoint": checkpoint, "embedding shard": embeddings,
             "label table": label_table, "FAISS index": faiss_index, "metrics": metrics}


@pytest.mark.parametrize("damage", ["truncated", "another kind of file"])
@pytest.mark.parametrize("kind", list(ARTIFACTS))
def test_a_damaged_artifact_is_an_error_naming_its_path(tmp_path: Path, kind: str, damage: str) -> None:
    path, read = ARTIFACTS[kind](tmp_path)
    read(path)  # intact, it reads
    if damage == "truncated":
        truncate(path)
    else:
        path.write_bytes(b"PK\x03\x04 this is not what the stage expects " * 20)
    with pytest.raises(ValueError) as err:
        read(path)
    assert str(err.value).startswith(f"{path}: not a"), err.value
    assert "\n" not in str(err.value)


def test_a_cache_of_the_wrong_array_kind_is_named(tmp_path: Path) -> None:
    path = tmp_path / "cache.npy"
    write_image_cache(np.zeros((2, 4, 4, 3), np.uint8), ["a", "b"], path)
    np.save(path, np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=rf"{path}: not an image cache: expected \(N, H, W, 3\) uint8"):
        read_image_cache(path)


def test_a_dict_that_is_not_a_cvgl_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match=rf"{path}: not a cvgl checkpoint \(no model, optimizer, epoch, config\)"):
        load_checkpoint(path)


def test_the_command_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    path, _ = label_table(tmp_path)
    truncate(path)
    proc = subprocess.run([sys.executable, "-m", "cvgl", "labels", "show", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"cvgl labels: error: {path}: not a readable label table")


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`cvgl labels show ... | head`: the closed pipe ends the command with no traceback."""
    path = tmp_path / "labels.parquet"
    row = {"ground_id": "g" * 40, "satellite_id": "s" * 40, "score": 0.5, "second_score": 0.4, "margin": 0.1,
           "mutual": True, "threshold": 0.05, "kept": True, "source": "pseudo", "correct": None}
    pd.DataFrame([row] * 5000, columns=list(LABEL_COLUMNS)).to_parquet(path)  # far more than a pipe's buffer
    proc = subprocess.Popen([sys.executable, "-m", "cvgl", "labels", "show", str(path), "--rows", "5000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # the reader takes one line and goes away, as `head -1` does
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
