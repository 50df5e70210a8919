"""Figures written next to the summary: one margin histogram per round (correct vs wrong pseudo labels where
truth exists) and, across rounds, test Recall@K, pseudo-label counts, precision and coverage. matplotlib with the
file-only Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend is chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cvgl.io import atomic_path  # noqa: E402
from cvgl.label_table import read_label_table  # noqa: E402


def save_figure(fig: plt.Figure, out: Path) -> None:
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
    save_figure(fig, out)


RECALL_CURVES = (("R@1", "R@1"), ("R@5", "R@5"), ("R@10", "R@10"), ("R@1%", "R@1%"), ("hit_rate", "hit rate"))
LABEL_SHARES = (("labels_precision", "precision"), ("labels_coverage", "coverage"))


def _plot_percent_curves(ax: plt.Axes, summary: pd.DataFrame, curves: tuple[tuple[str, str], ...]) -> None:
    for column, label in curves:
        if column in summary and summary[column].notna().any():
            ax.plot(summary["round"], 100 * summary[column], marker="o", label=label)


def _plot_label_counts(ax: plt.Axes, summary: pd.DataFrame) -> None:
    """Kept and correct pseudo labels side by side per round (round 0, the cold start, has none)."""
    if "labels_kept" not in summary:
        return
    rounds = summary[summary["labels_kept"].notna()]
    ax.bar(rounds["round"] - 0.2, rounds["labels_kept"], width=0.4, color="tab:gray", label="kept")
    if rounds["labels_correct"].notna().any():
        ax.bar(rounds["round"] + 0.2, rounds["labels_correct"], width=0.4, color="tab:green", label="correct")


def rounds_figure(summary: pd.DataFrame, out: Path) -> None:
    """Across rounds: test Recall@K; pseudo labels kept and correct; their precision and train coverage."""
    fig, (recall, counts, shares) = plt.subplots(1, 3, figsize=(15, 3.8))
    _plot_percent_curves(recall, summary, RECALL_CURVES)
    recall.set(ylabel="% of test panoramas", title="test Recall@K")
    _plot_label_counts(counts, summary)
    counts.set(ylabel="pairs", title="pseudo labels")
    counts.yaxis.set_major_locator(MaxNLocator(integer=True))
    _plot_percent_curves(shares, summary, LABEL_SHARES)
    shares.set(ylabel="%", title="pseudo-label precision and coverage")
    for ax in (recall, counts, shares):
        ax.set_xlabel("round")
        ax.set_xticks(summary["round"].tolist())
        if ax.get_legend_handles_labels()[0]:  # below the panel: curves end at the right edge where legends sit
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=5, fontsize="small", frameon=False)
    save_figure(fig, out)


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
