"""Reading label tables in a terminal: `cvgl labels show | diff | export` (issue 5).

Every function takes `labels.parquet` (diagnosed, with `correct`) or `matches.parquet` (no truth) paths; where
`correct` is null the precision columns say so instead of guessing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cvgl.io import atomic_path
from cvgl.label_table import label_summary, read_label_table


def _pct(correct: pd.Series) -> str:
    judged = correct.dropna()
    return "-" if judged.empty else f"{100 * judged.astype(bool).mean():.1f}%"


def margin_histogram(margin: pd.Series, correct: pd.Series, bins: int = 8, width: int = 30) -> list[str]:
    """Text histogram of the margins of mutual rows, correct (#) and wrong (.) stacked, unknown as ?."""
    m = margin.replace([np.inf, -np.inf], np.nan).dropna()
    if m.empty:
        return []
    edges = np.linspace(0.0, max(float(m.max()), 1e-6), bins + 1)
    which = np.clip(np.searchsorted(edges, m.to_numpy(), side="right") - 1, 0, bins - 1)
    c = correct.reindex(m.index)
    lines, top = [], max(1, int(np.bincount(which, minlength=bins).max()))
    for b in range(bins):
        sel = which == b
        good = int((c[sel] == True).sum())  # noqa: E712 (nullable boolean)
        bad = int((c[sel] == False).sum())  # noqa: E712
        unknown = int(sel.sum()) - good - bad
        scale = min(1.0, width / top)  # bars are scaled together, so lengths compare across bins
        bar = "".join(ch * math.ceil(n * scale) for ch, n in (("#", good), (".", bad), ("?", unknown)))
        lines.append(f"  [{edges[b]:.3f}, {edges[b + 1]:.3f})  {int(sel.sum()):6d}  {bar}")
    return lines


def show_labels(path: Path, rows: int = 10) -> None:
    """Counts by source, margin distribution, precision and coverage where truth exists, the first rows."""
    table = read_label_table(path)
    s = label_summary(table)
    print(f"{path}: {s['total']} grounds, {s['mutual']} mutual, {s['kept']} kept "
          f"({s['kept_pseudo']} pseudo, {s['kept_labeled']} labeled); threshold {table.threshold.iloc[0]:.4f}")
    if s["precision"] is not None:
        print(f"precision {100 * s['precision']:.1f}% ({s['correct']} correct), coverage {100 * s['coverage']:.1f}%")
    q = table.margin.replace([np.inf, -np.inf], np.nan).quantile([0.1, 0.5, 0.9])
    print("margin quantiles 10/50/90%: " + " ".join(f"{v:.4f}" for v in q))
    mutual = table[table.mutual]
    print("margins of mutual rows (# correct, . wrong, ? no truth):")
    print("\n".join(margin_histogram(mutual.margin, mutual.correct)))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.head(rows).to_string(index=False))


def diff_labels(old_path: Path, new_path: Path) -> pd.DataFrame:
    """Kept pairs of two label tables (e.g. two rounds) by change: added, dropped, changed, unchanged.

    Returns one row per ground in either kept set with `change`, both satellites and both verdicts.
    """
    old, new = read_label_table(old_path), read_label_table(new_path)
    cols = ["ground_id", "satellite_id", "kept", "correct", "margin"]
    both = old[cols].merge(new[cols], on="ground_id", how="outer", suffixes=("_old", "_new"))
    kept_old = both.kept_old.fillna(False).astype(bool)
    kept_new = both.kept_new.fillna(False).astype(bool)
    both = both[kept_old | kept_new].copy()
    ko, kn = kept_old[both.index], kept_new[both.index]
    same = both.satellite_id_old == both.satellite_id_new
    both["change"] = np.select([ko & ~kn, ~ko & kn, ko & kn & same], ["dropped", "added", "unchanged"], "changed")
    return both.drop(columns=["kept_old", "kept_new"]).sort_values(["change", "ground_id"], ignore_index=True)


def print_diff(old_path: Path, new_path: Path, rows: int = 5) -> None:
    d = diff_labels(old_path, new_path)
    print(f"kept pairs: {old_path} -> {new_path}")
    print(f"{'change':>10} {'pairs':>7} {'precision':>10}   (of the pair in the table that has it)")
    for change in ("added", "dropped", "changed", "unchanged"):
        part = d[d.change == change]
        verdict = part.correct_old if change == "dropped" else part.correct_new
        print(f"{change:>10} {len(part):7d} {_pct(verdict):>10}")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for change in ("added", "dropped", "changed"):
            part = d[d.change == change]
            if len(part):
                print(f"\nfirst {change}:\n" + part.head(rows).to_string(index=False))


def export_labels(path: Path, out: Path, kept_only: bool = False) -> int:
    """Write a label table as CSV (atomically); returns the number of rows written."""
    table = read_label_table(path)
    if kept_only:
        table = table[table.kept]
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return len(table)
