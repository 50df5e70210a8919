"""Figures written next to the summary: one margin histogram per round (correct vs wrong pseudo labels where
truth exists) and precision / coverage / R@1 across rounds. matplotlib with the file-only Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend is chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cvgl.io import atomic_path  # noqa: E402
from cvgl.labels import read_label_table  # noqa: E402


def _save(fig: plt.Figure, out: Path) -> None:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})  # no version stamp: same bytes
    plt.close(fig)


def margin_figure(labels: pd.DataFrame, title: str, out: Path) -> None:
    """Histogram of the mutual rows' margins, split by verdict, with the round's threshold."""
    mutual = labels[labels.mutual & np.isfinite(labels.margin)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0.0, max(float(mutual.margin.max()) if len(mutual) else 0.0, 1e-3), 31)
    groups = [("correct", mutual.correct == True, "tab:green"), ("wrong", mutual.correct == False, "tab:red"),  # noqa: E712
              ("no truth", mutual.correct.isna(), "tab:gray")]
    data = [(name, mutual.margin[sel.fillna(False).to_numpy(bool)], colour) for name, sel, colour in groups]
    data = [d for d in data if len(d[1])]
    if data:
        ax.hist([d[1] for d in data], bins=bins, stacked=True, label=[d[0] for d in data], color=[d[2] for d in data])
    ax.axvline(float(labels.threshold.iloc[0]), color="black", linestyle="--", label="threshold")
    ax.set(xlabel="margin (top-1 minus top-2 cosine)", ylabel="mutual pairs", title=title)
    ax.legend()
    _save(fig, out)


def rounds_figure(summary: pd.DataFrame, out: Path) -> None:
    """Pseudo-label precision and coverage, and test R@1, per round."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for column, label in (("labels_precision", "label precision"), ("labels_coverage", "label coverage"),
                          ("R@1", "test R@1")):
        if column in summary and summary[column].notna().any():
            ax.plot(summary["round"], 100 * summary[column], marker="o", label=label)
    ax.set(xlabel="round", ylabel="%", title="pseudo labels and retrieval across rounds")
    ax.set_xticks(summary["round"].tolist())
    ax.legend()
    _save(fig, out)


def write_plots(summary_csv: Path, label_tables: list[Path], out_dir: Path) -> list[Path]:
    """`rounds.png` and one `round-N-margins.png` per label table (N read from the parent folder name)."""
    written = [out_dir / "rounds.png"]
    rounds_figure(pd.read_csv(summary_csv), written[0])
    for path in label_tables:
        name = Path(path).parent.name  # round-N
        out = out_dir / f"{name}-margins.png"
        margin_figure(read_label_table(path), f"{name}: margins of mutual nearest neighbours", out)
        written.append(out)
    return written
