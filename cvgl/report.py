"""The report items the rounds do not make: sample images of each stage, the resolved config, the summary as a
table. `snakemake --report` collects them with the plots; nothing here imports Snakemake.

The samples show each train panorama's true tile. That reads the truth, which is allowed here because the figure
is a diagnostic for people: no training stage reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.colors import LogNorm
from matplotlib.ticker import MaxNLocator

from cvgl.data.manifest import image_ids, read_images, read_truth
from cvgl.io import atomic_path, load_image, read_image_cache, read_parquet
from cvgl.plots import plt, save_figure  # plt through cvgl.plots: the Agg backend is already chosen
from cvgl.summary import format_count, format_percent

SAMPLE_COLUMNS = ("panorama", "projection", "translation", "true tile")


def choose_samples(candidates: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` ids drawn with `seed` from the sorted candidates, so a run always shows the same panoramas."""
    pool = sorted(candidates)
    picked = np.random.default_rng(seed).choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[i] for i in sorted(picked)]


def _stage_paths(stage_dir: Path | None) -> dict[str, Path]:
    """ground_id -> image of a per-panorama stage (projected/, translated/), read from its index.parquet."""
    if stage_dir is None:
        return {}
    index = read_parquet(Path(stage_dir) / "index.parquet", ["ground_id", "path"])
    return {g: Path(stage_dir) / p for g, p in zip(index.ground_id, index.path, strict=True)}


def sample_images(manifest_dir: Path, root: Path, projected_dir: Path | None, translated_dir: Path | None,
                  count: int, seed: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(ground_id, {column: image}) for `count` train panoramas that have a true tile (and a projection where
    projections are given); the columns present are those of SAMPLE_COLUMNS the run made."""
    images = read_images(manifest_dir).set_index("image_id")
    truth = read_truth(manifest_dir)
    train = set(image_ids(images.reset_index(), "ground", "train"))
    tile_of = (truth[(truth.kind == "positive") & truth.ground_id.isin(train)]
               .drop_duplicates("ground_id").set_index("ground_id")["satellite_id"])
    stages = {"projection": _stage_paths(projected_dir), "translation": _stage_paths(translated_dir)}
    stages = {name: paths for name, paths in stages.items() if paths}
    candidates = [g for g in tile_of.index if all(g in paths for paths in stages.values())]
    if not candidates:
        raise ValueError(f"{manifest_dir}/truth.parquet: no train panorama with a true tile"
                         + (" and a projection" if stages else ""))
    samples = []
    for gid in choose_samples(candidates, count, seed):
        row = {"panorama": load_image(Path(root) / images.at[gid, "path"])}
        row.update({name: load_image(paths[gid]) for name, paths in stages.items()})
        row["true tile"] = load_image(Path(root) / images.at[tile_of[gid], "path"])
        samples.append((gid, row))
    return samples


def samples_figure(samples: list[tuple[str, dict[str, np.ndarray]]], out: Path) -> None:
    """One row per panorama, one column per stage; panoramas keep their aspect, the square images share a size."""
    columns = [c for c in SAMPLE_COLUMNS if c in samples[0][1]]
    pano = samples[0][1]["panorama"]
    widths = [pano.shape[1] / pano.shape[0] if c == "panorama" else 1.0 for c in columns]
    row_inches = 1.8
    fig, axes = plt.subplots(len(samples), len(columns), squeeze=False, gridspec_kw={"width_ratios": widths},
                             figsize=(row_inches * sum(widths) + 0.6, row_inches * len(samples) + 0.5))
    for r, (gid, row) in enumerate(samples):
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(row[name])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
        axes[r, 0].set_ylabel(gid, fontsize=8)  # the opaque id, to find the panorama in the label tables
    save_figure(fig, out)


def write_samples(manifest_dir: Path, root: Path, projected_dir: Path | None, translated_dir: Path | None,
                  count: int, seed: int, out: Path) -> list[str]:
    """The samples figure; returns the ground ids shown."""
    samples = sample_images(manifest_dir, root, projected_dir, translated_dir, count, seed)
    samples_figure(samples, out)
    return [gid for gid, _ in samples]


def write_resolved_config(cfg: dict[str, Any], out: Path) -> None:
    """The config the run used (config files, schema defaults and the paper's defaults merged) as YAML."""
    text = ("# The resolved config of this run: every config file and --config merged, schema and paper defaults "
            "filled in.\n" + yaml.safe_dump(cfg, sort_keys=True, default_flow_style=False))
    with atomic_path(out) as tmp:
        tmp.write_text(text)


PERCENT_COLUMNS = {"R@1": "R@1", "R@5": "R@5", "R@10": "R@10", "R@1%": "R@1%", "hit_rate": "hit rate",
                   "labels_precision": "label precision", "labels_coverage": "label coverage"}
COUNT_COLUMNS = {"round": "round", "labels_kept": "labels kept", "labels_correct": "labels correct",
                 "queries": "test queries", "gallery": "test gallery"}
TABLE_STYLE = ("body{font-family:sans-serif;margin:0.5em}table{border-collapse:collapse}"
               "th,td{padding:0.25em 0.7em;border-bottom:1px solid #ccc;text-align:right}th{background:#eee}")


def summary_html(summary: pd.DataFrame) -> str:
    """summary.csv as a standalone HTML table: recalls and label shares in percent, counts as integers."""
    known = [c for c in summary.columns if c in PERCENT_COLUMNS or c in COUNT_COLUMNS]
    shown = summary[known].copy()
    for column in known:
        cell = partial(format_percent, digits=2) if column in PERCENT_COLUMNS else format_count
        shown[column] = shown[column].map(partial(cell, missing="–"))
    shown = shown.rename(columns={**PERCENT_COLUMNS, **COUNT_COLUMNS})
    table = shown.to_html(index=False, border=0)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>cvgl summary</title>'
            f"<style>{TABLE_STYLE}</style></head><body>\n<p>Recall, hit rate, label precision and coverage in "
            f"percent.</p>\n{table}\n</body></html>\n")


def write_summary_table(summary_csv: Path, out: Path) -> None:
    html = summary_html(pd.read_csv(summary_csv))
    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# Retrievals of a round: a few test queries with their top tiles, and a map of the top-1 errors


def _cache_rows(cache: Path) -> tuple[dict[str, int], np.ndarray]:
    ids, images = read_image_cache(cache)
    return {str(i): r for r, i in enumerate(ids)}, images


def retrieval_figure(retrievals: Path, manifest_dir: Path, ground_cache: Path, satellite_cache: Path, count: int,
                     seed: int, out: Path, shown: int = 5) -> list[str]:
    """`count` test queries drawn with `seed`, each with its top-`shown` tiles best first, the true tile framed
    in green (and named in the title when it is not among them); returns the query ids shown."""
    table = read_parquet(retrievals, ["ground_id", "true_rank", "top_ids", "top_scores"]).set_index("ground_id")
    truth = read_truth(manifest_dir)
    tile_of = truth[truth.kind == "positive"].drop_duplicates("ground_id").set_index("ground_id")["satellite_id"]
    g_row, grounds = _cache_rows(ground_cache)
    s_row, tiles = _cache_rows(satellite_cache)
    picked = choose_samples(list(table.index), count, seed)
    k = min(shown, min(len(t) for t in table.top_ids))
    pano = grounds[0]
    widths = [pano.shape[1] / pano.shape[0]] + [1.0] * k
    fig, axes = plt.subplots(len(picked), k + 1, squeeze=False, gridspec_kw={"width_ratios": widths},
                             figsize=(1.6 * sum(widths) + 0.6, 1.8 * len(picked) + 0.4))
    for r, gid in enumerate(picked):
        row = table.loc[gid]
        axes[r, 0].imshow(grounds[g_row[gid]])
        axes[r, 0].set_title(f"true tile at rank {int(row.true_rank) + 1}", fontsize=8)
        axes[r, 0].set_ylabel(gid, fontsize=7)
        for c in range(k):
            ax = axes[r, c + 1]
            tile = str(row.top_ids[c])
            ax.imshow(tiles[s_row[tile]])
            ax.set_title(f"{c + 1}: {float(row.top_scores[c]):.3f}", fontsize=8)
            if tile == tile_of.get(gid):
                for side in ax.spines.values():
                    side.set(color="tab:green", linewidth=4)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, out)
    return picked


def error_map(retrievals: Path, manifest_dir: Path, out: Path) -> int:
    """The test queries at their coordinates, coloured by the top-1 tile's distance (log scale); a figure that
    says so when the manifest has no coordinates. Returns the number of queries drawn."""
    table = read_parquet(retrievals, ["ground_id", "top1_distance_m"])
    images = read_images(manifest_dir)
    known = table[np.isfinite(table.top1_distance_m.to_numpy(np.float64))]
    fig, ax = plt.subplots(figsize=(6, 5))
    if known.empty or "lat" not in images.columns:
        ax.text(0.5, 0.5, "no coordinates in this dataset's manifest", ha="center", va="center")
        ax.set_axis_off()
        save_figure(fig, out)
        return 0
    by_id = images.drop_duplicates("image_id").set_index("image_id")
    metres = known.top1_distance_m.to_numpy()
    at = by_id.loc[known.ground_id, ["lat", "lon"]].assign(metres=metres, error=np.maximum(metres, 1.0))
    # One panel per city where the dataset has cities (VIGOR's are 1,000 km apart): one map would be two dots.
    groups = list(at.groupby(by_id.loc[known.ground_id, "city"].to_numpy())) if "city" in by_id.columns \
        else [("", at)]
    plt.close(fig)
    fig, axes = plt.subplots(1, len(groups), squeeze=False, figsize=(5.5 * len(groups) + 1, 5))
    norm = LogNorm(vmin=1.0, vmax=float(at.error.max()) if at.error.max() > 1 else 10.0)
    for ax, (name, part) in zip(axes[0], groups, strict=True):
        dots = ax.scatter(part.lon, part.lat, c=part.error, s=14, cmap="viridis_r", norm=norm)
        ax.set(xlabel="longitude", ylabel="latitude", title=f"{name} {len(part)} test queries, median top-1 error "
               f"{np.median(part.metres):.0f} m".strip())
        ax.ticklabel_format(useOffset=False)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.set_aspect(1.0 / max(np.cos(np.radians(float(part.lat.mean()))), 1e-3))  # metres look square
    fig.colorbar(dots, ax=axes[0, -1], label="top-1 error (m; under 1 m drawn at 1 m)")
    save_figure(fig, out)
    return len(known)
