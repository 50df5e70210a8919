"""The run's summary: one row per round of the metrics files, as `summary.csv` and as the terminal table
Snakemake prints at the end. No torch: the job and the end-of-run printout start fast."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cvgl.io import atomic_path, read_json

SUMMARY_COLUMNS = ["round", "R@1", "R@5", "R@10", "R@1%", "hit_rate", "labels_kept", "labels_correct",
                   "labels_precision", "labels_coverage", "queries", "gallery"]


def summary_stage(metrics_paths: list[Path], out: Path) -> pd.DataFrame:
    """One row per round: recalls, distance recalls where coordinates exist, and pseudo-label counts/precision;
    also printed as a table."""
    rows = [read_json(p, "metrics file") for p in metrics_paths]
    distance = sorted({k for r in rows for k in r if re.fullmatch(r"R@[\d.]+m", k)}, key=lambda k: float(k[2:-1]))
    distance += ["median_error_m"] if any("median_error_m" in r for r in rows) else []
    df = pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS + distance).sort_values("round").reset_index(drop=True)
    if df["hit_rate"].isna().all():  # only VIGOR-style truth (semi-positives) has a hit rate
        df = df.drop(columns="hit_rate")
    _write_csv(df, out)
    print(format_summary(df))
    return df


def _write_csv(df: pd.DataFrame, out: Path) -> None:
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)


def format_summary(df: pd.DataFrame) -> str:
    """A terminal table: recalls in percent, label counts and precision per round."""
    distance = [c for c in df.columns if re.fullmatch(r"R@[\d.]+m", c)]
    lines = [f"{'round':>5} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'R@1%':>6} {'kept':>6} {'correct':>7} "
             f"{'prec':>6} {'cover':>6}" + "".join(f" {c:>7}" for c in distance)
             + (f" {'median':>8}" if "median_error_m" in df.columns else "")]
    for r in df.to_dict("records"):
        recalls = " ".join(f"{100 * r[k]:6.2f}" for k in ("R@1", "R@5", "R@10", "R@1%"))
        lines.append(f"{int(r['round']):>5} {recalls} {format_count(r['labels_kept']):>6} "
                     f"{format_count(r['labels_correct']):>7} {format_percent(r['labels_precision']):>6} "
                     f"{format_percent(r['labels_coverage']):>6}"
                     + "".join(f" {format_percent(r[c], 2):>7}" for c in distance)
                     + (f" {r['median_error_m']:7.1f}m" if "median_error_m" in df.columns else ""))
    return "\n".join(lines)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def format_count(v: Any, missing: str = "-") -> str:
    """An integer cell of a metrics table (`missing` for None/NaN: rounds without labels)."""
    return missing if _missing(v) else str(int(v))


def format_percent(v: Any, digits: int = 1, missing: str = "-") -> str:
    """A share (0..1) as a percent cell of a metrics table (`missing` for None/NaN)."""
    return missing if _missing(v) else f"{100 * float(v):.{digits}f}"
