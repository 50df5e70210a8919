"""The label table (`round-N/matches.parquet`, `labels.parquet`): its schema, reading and writing it, the truth's
verdicts and the counts. No torch: the small jobs and `cvgl labels` that read tables start in a second."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cvgl.data.manifest import read_truth
from cvgl.io import atomic_path, reading

# The labels.parquet schema (docs/architecture.md). Writing through a fixed arrow schema keeps the dtypes (float32,
# nullable bool) and makes the file bytes depend only on the values.
LABEL_SCHEMA = pa.schema([
    ("ground_id", pa.string()),
    ("satellite_id", pa.string()),
    ("score", pa.float32()),
    ("second_score", pa.float32()),
    ("margin", pa.float32()),
    ("mutual", pa.bool_()),
    ("threshold", pa.float32()),
    ("kept", pa.bool_()),
    ("source", pa.string()),
    ("correct", pa.bool_()),
])
LABEL_COLUMNS = tuple(LABEL_SCHEMA.names)


def _missing_column(columns: Sequence[str], source: str) -> None:
    for column in LABEL_COLUMNS:
        if column not in columns:
            raise ValueError(f"{source}: missing column '{column}' (a label table has {list(LABEL_COLUMNS)})")


def write_label_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write a label table atomically; the same table always gives the same bytes."""
    path = Path(path)
    _missing_column(list(df.columns), f"label table for {path}")
    table = pa.Table.from_pandas(df[list(LABEL_COLUMNS)], schema=LABEL_SCHEMA, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(None), tmp, compression="zstd")


def read_label_table(path: str | Path) -> pd.DataFrame:
    """Read a label table, checking its columns; errors name the file and the missing column."""
    path = Path(path)
    with reading(path, "label table"):
        table = pq.read_table(path)
    _missing_column(table.column_names, str(path))
    df = table.select(list(LABEL_COLUMNS)).cast(LABEL_SCHEMA).to_pandas()
    df["correct"] = df["correct"].astype("boolean")
    return df


def fill_correct(labels: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with `correct` = (satellite_id is the ground's positive); NA where the ground has none.

    Diagnostics only: training never reads `correct`. Rows of `truth` other than kind == "positive" (VIGOR's
    semi-positives) do not count as correct.
    """
    for column in ("ground_id", "satellite_id"):
        if column not in truth.columns:
            raise ValueError(f"truth: missing column '{column}'; found {list(truth.columns)}")
    positives = truth if "kind" not in truth.columns else truth[truth["kind"] == "positive"]
    judged = labels["ground_id"].isin(positives["ground_id"]).to_numpy()
    true_pairs = pd.MultiIndex.from_arrays([positives["ground_id"].astype(str), positives["satellite_id"].astype(str)])
    hit = pd.MultiIndex.from_arrays([labels["ground_id"].astype(str), labels["satellite_id"].astype(str)])
    correct = pd.array(hit.isin(true_pairs), dtype="boolean")
    correct[~judged] = pd.NA
    out = labels.copy()
    out["correct"] = correct
    return out


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def label_summary(labels: pd.DataFrame) -> dict:
    """Counts and rates of a label table (plain Python values, ready for JSON).

    `correct`/`precision` are None when no row has a truth verdict. Precision divides by the kept rows that have
    a verdict (all kept rows when truth is complete). `*_pseudo` leave out the labeled pairs, which are correct
    by construction and would flatter the pseudo-label precision.
    """
    kept = labels["kept"].to_numpy(dtype=bool)
    pseudo = (labels["source"] == "pseudo").to_numpy()
    verdict = labels["correct"].astype("boolean")
    judged = verdict.notna().to_numpy()
    correct = verdict.fillna(False).to_numpy(dtype=bool)
    has_truth = bool(judged.any())
    kept_correct = int((kept & correct).sum())
    pseudo_correct = int((kept & pseudo & correct).sum())
    return {
        "total": len(labels),
        "mutual": int(labels["mutual"].to_numpy(dtype=bool).sum()),
        "kept": int(kept.sum()),
        "kept_pseudo": int((kept & pseudo).sum()),
        "kept_labeled": int((kept & ~pseudo).sum()),
        "correct": kept_correct if has_truth else None,
        "precision": _ratio(kept_correct, int((kept & judged).sum())) if has_truth else None,
        "correct_pseudo": pseudo_correct if has_truth else None,
        "precision_pseudo": _ratio(pseudo_correct, int((kept & pseudo & judged).sum())) if has_truth else None,
        "coverage": _ratio(int(kept.sum()), len(labels)),
    }


def diagnose_stage(matches_path: Path, manifest_dir: Path, out: Path) -> None:
    """Fill `correct` of a label table from the truth (diagnostics only; training never reads this file)."""
    table = fill_correct(read_label_table(matches_path), read_truth(manifest_dir))
    write_label_table(table, out)
    s = label_summary(table)
    print(f"[diagnose] kept {s['kept']}, correct {s['correct']}, precision {s['precision']}", file=sys.stderr)
