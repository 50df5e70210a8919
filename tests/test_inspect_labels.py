"""`cvgl labels show | diff | export` on hand-made label tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cvgl.cli import main
from cvgl.inspect_labels import diff_labels, export_labels
from cvgl.label_table import write_label_table


def table(sats: list[str], kept: list[bool], correct: list[bool | None]) -> pd.DataFrame:
    n = len(sats)
    return pd.DataFrame({
        "ground_id": [f"g{i}" for i in range(n)], "satellite_id": sats, "score": [0.9] * n,
        "second_score": [0.8] * n, "margin": [0.1] * n, "mutual": [True] * n, "threshold": [0.05] * n,
        "kept": kept, "source": ["pseudo"] * n, "correct": pd.array(correct, dtype="boolean")})


@pytest.fixture
def two_rounds(tmp_path: Path) -> tuple[Path, Path]:
    # g0 stays (correct), g1 is dropped, g2 changes tile, g3 is added, g4 is never kept.
    old = table(["s0", "s1", "s2", "s9", "s4"], [True, True, True, False, False], [True, False, False, None, None])
    new = table(["s0", "s1", "s5", "s3", "s4"], [True, False, True, True, False], [True, False, True, True, False])
    write_label_table(old, tmp_path / "r1.parquet")
    write_label_table(new, tmp_path / "r2.parquet")
    return tmp_path / "r1.parquet", tmp_path / "r2.parquet"


def test_diff_sorts_every_kept_pair_into_one_change(two_rounds: tuple[Path, Path]) -> None:
    d = diff_labels(*two_rounds).set_index("ground_id")
    assert d.change.to_dict() == {"g0": "unchanged", "g1": "dropped", "g2": "changed", "g3": "added"}
    assert d.loc["g2", "satellite_id_old"] == "s2" and d.loc["g2", "satellite_id_new"] == "s5"


def test_cli_prints_precision_per_change_and_exports_csv(two_rounds: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labels", "diff", str(two_rounds[0]), str(two_rounds[1])]) == 0
    out = capsys.readouterr().out
    assert "added" in out and "100.0%" in out and "dropped" in out
    assert main(["labels", "show", str(two_rounds[1])]) == 0
    shown = capsys.readouterr().out
    assert "3 kept" in shown and "precision 100.0%" in shown and "#" in shown
    n = export_labels(two_rounds[1], tmp_path / "kept.csv", kept_only=True)
    back = pd.read_csv(tmp_path / "kept.csv")
    assert n == 3 and back.ground_id.tolist() == ["g0", "g2", "g3"] and back.kept.all()
