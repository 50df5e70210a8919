"""The workflow's stages as plain functions: paths and config slices in, files out.

The CLI (`cvgl <stage>`) parses arguments and calls one of these; Snakemake rules call the CLI. Nothing here
imports Snakemake, so every stage runs and is tested on its own.
"""

from __future__ import annotations

import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cvgl.augment import resize_images
from cvgl.config import job_settings, with_section_defaults
from cvgl.data.manifest import image_ids, read_images, read_truth
from cvgl.distributed import training_network
from cvgl.embed import FEATURE_DTYPE, embed_features, embed_images, write_backbone_features
from cvgl.embed_io import read_embeddings, write_embedding_shards
from cvgl.index import block_rows, build_index, read_index, set_search_parameters, set_threads, write_index
from cvgl.io import (
    Progress,
    atomic_path,
    decode_to_memmap,
    ids_sidecar,
    load_images,
    read_image_cache,
    read_json,
    read_parquet,
    reading,
    save_image,
    write_ids_sidecar,
    write_json,
    write_parquet,
)
from cvgl.label_table import label_summary, read_label_table, write_label_table
from cvgl.labels import build_label_table, margin_threshold, mutual_matches, mutual_matches_faiss
from cvgl.localize import retrieval_table
from cvgl.metrics import distance_metrics, hit_rate, ranked_retrievals, recall_at_k
from cvgl.models import CrossViewModel, autocast_dtype, resolve_device
from cvgl.prior import read_prior
from cvgl.train import (
    Stage,
    build_model,
    cross_view_stage,
    fit,
    intra_view_stage,
    load_checkpoint,
    model_from_checkpoint,
    resolve,
    round_stage,
)
from cvgl.translate import make_translator

# ---------------------------------------------------------------------------------------------------------
# Data


def synth_stage(synth_cfg: dict[str, Any], root: Path, seed: int, threads: int = 1) -> None:
    """Render the built-in synthetic world at `root` in the layout `synth.layout` names (cvusa|cvact|vigor),
    its locations on `threads` processes (same bytes whatever the count)."""
    from cvgl.synth import synth_config_from_dict, write_synthetic

    write_synthetic(synth_config_from_dict(synth_cfg), Path(root), seed, workers=threads)


# ---------------------------------------------------------------------------------------------------------
# Cross-view projection and translation


def project_stage(manifest_dir: Path, root: Path, cfg: dict[str, Any], out_dir: Path, threads: int) -> None:
    """Project every train panorama to a bird's-eye view with one cached sampling grid, in batches of
    `project.batch_size` decoded, projected and encoded on `threads` worker processes (cvgl.projection)."""
    from cvgl.geometry import bev_valid_mask
    from cvgl.projection import project_files

    cfg = with_section_defaults(cfg, "project")
    images = read_images(manifest_dir)
    ids = image_ids(images, "ground", "train")
    rel = images.set_index("image_id").loc[ids, "path"].tolist()
    pano_hw, size, fov, band = tuple(cfg["pano_size"]), cfg["size"], cfg["fov_deg"], cfg["band"]
    rows = [(gid, f"{gid}.{cfg['format']}") for gid in ids]
    project_files([Path(root) / p for p in rel], [out_dir / name for _, name in rows], pano_hw, size, fov, band,
                  cfg["batch_size"], threads, "project")
    valid = bev_valid_mask(pano_hw, size, fov, band)
    np.save(out_dir / "valid-mask.npy", valid)
    write_parquet(pd.DataFrame(rows, columns=["ground_id", "path"]), out_dir / "index.parquet")


def translate_stage(projected_dir: Path, satellite_cache: Path, method: str, model_out: Path, out_dir: Path,
                    options: dict[str, Any] | None = None, batch: int = 256, threads: int = 1) -> None:
    """Fit an unpaired translator (projections vs. train tiles, listed independently) and translate.

    Tiles go in at their cached size: the colour statistics do not depend on it and the CycleGAN resizes both
    sets to its own training size. With `cyclegan`, `<model_out>.state` holds the last finished epoch.
    Translations keep the projections' file format; `threads` decode and encode `batch` images at a time.
    """
    index = read_parquet(projected_dir / "index.parquet", ["ground_id", "path"])
    with reading(projected_dir / "valid-mask.npy", "projection validity mask"):
        valid = np.load(projected_dir / "valid-mask.npy", allow_pickle=False)
    size = valid.shape
    translator = make_translator(method, options, model_out)
    for i in range(0, len(index), batch):
        translator.update(projections=load_images([projected_dir / p for p in index.path[i:i + batch]], size,
                                                  threads), valid=valid)
    _, tiles = read_image_cache(satellite_cache)
    for i in range(0, len(tiles), batch):
        translator.update(satellites=np.asarray(tiles[i:i + batch]))
    translator.finish()
    with atomic_path(model_out) as tmp:
        torch.save(translator.state_dict(), tmp)
    Path(str(model_out) + ".state").unlink(missing_ok=True)
    names = [f"{g}{Path(p).suffix}" for g, p in zip(index.ground_id, index.path, strict=True)]
    progress = Progress(len(index), "translate")
    with ThreadPoolExecutor(max(1, threads)) as pool:  # Pillow's encoders release the GIL
        for i in range(0, len(index), batch):
            fake = translator.translate(load_images([projected_dir / p for p in index.path[i:i + batch]], size,
                                                    threads), valid)
            list(pool.map(save_image, fake, [out_dir / n for n in names[i:i + batch]]))
            progress.update(len(fake))
    write_parquet(index.assign(path=names), out_dir / "index.parquet")


# ---------------------------------------------------------------------------------------------------------
# Training


def intra_view_train(cfg: dict[str, Any], ground_cache: Path, satellite_cache: Path, out: Path) -> None:
    """Cold start, part 1: each encoder learns its own view from two augmentations of the same image."""
    device = resolve(cfg)
    _, ground = read_image_cache(ground_cache)  # memory-mapped: each batch reads its rows
    _, satellite = read_image_cache(satellite_cache)
    model, optimizer = build_model(cfg, None, device)
    net = training_network(model, device)  # DDP across torchrun processes, else the model itself
    fit(model, optimizer, intra_view_stage(net, ground, satellite, cfg, device), cfg, out)


def cross_view_train(cfg: dict[str, Any], init: Path | None, ground_cache: Path, fakes_dir: Path | None,
                     out: Path) -> None:
    """Cold start, part 2: (panorama, its own fake) pairs; writes the round-0 model.

    The fakes are the panoramas' translated projections, or their raw projections (translate.method: none),
    read from `fakes_dir` (`translated/` or `projected/`, the same index layout). Without `fakes_dir` the
    satellite side is the panorama itself, resized (ablation a, docs/method.md §13). With 0 epochs the init
    model (or a fresh one) becomes round 0 (ablation d).
    """
    device = resolve(cfg)
    ids, ground = read_image_cache(ground_cache)
    size = tuple(cfg["model"]["satellite_size"])
    if cfg["stage"]["epochs"] == 0:
        fake = ground  # no step reads it: nothing is decoded or resized
    elif fakes_dir is None:
        fake = resize_images(ground, size)
    else:
        fake = load_projections(fakes_dir, ids, size, cfg.get("threads", 1))  # threads: the job's (job_settings)
    model, optimizer = build_model(cfg, init, device)
    offset = cfg.get("schedule_offset", 0)  # set by cvgl.config.cross_view_slice; 0 for a stage on its own
    net = training_network(model, device)
    fit(model, optimizer, cross_view_stage(net, ground, fake, cfg, device, offset), cfg, out)


def round_train(cfg: dict[str, Any], init: Path, labels_path: Path, ground_cache: Path, satellite_cache: Path,
                out: Path, round_index: int, fakes_dir: Path | None = None) -> None:
    """Self-training round n: train the round n-1 model on round n's pseudo (and labeled) pairs.

    Reads the label table without its `correct` column; with `fakes_dir` the cold start's (panorama, fake)
    pairs stay in the mix (`rounds.keep_fake_pairs`). Under torchrun only the training is spread over
    processes: the label table was made once, by its own rule.
    """
    device = resolve(cfg)
    g_ids, ground = read_image_cache(ground_cache)
    s_ids, satellite = read_image_cache(satellite_cache)
    labels = read_label_table(labels_path)[["ground_id", "satellite_id", "kept", "source"]]
    fake = None
    if fakes_dir is not None:
        fake = load_projections(fakes_dir, g_ids, tuple(cfg["model"]["satellite_size"]), cfg.get("threads", 1))
    model, optimizer = build_model(cfg, init, device)
    net = training_network(model, device)
    stage: Stage = round_stage(net, ground, satellite, g_ids, s_ids, labels, cfg, device, round_index, fake)
    fit(model, optimizer, stage, cfg, out)


def load_projections(images_dir: Path, ground_ids: np.ndarray, size_hw: tuple[int, int], threads: int
                     ) -> np.ndarray:
    """The projection of every train panorama, translated (`translated/`) or raw (`projected/`), at
    `size_hw`, rows aligned with `ground_ids`."""
    index = read_parquet(images_dir / "index.parquet", ["ground_id", "path"]).set_index("ground_id")
    missing = set(ground_ids) - set(index.index)
    if missing:
        raise ValueError(f"{images_dir}/index.parquet lacks {len(missing)} train panoramas")
    return decode_to_memmap([images_dir / p for p in index.loc[ground_ids, "path"]], size_hw, threads,
                            "load projections")


# ---------------------------------------------------------------------------------------------------------
# Embedding, indexing, pseudo labels, evaluation


def embed_stage(model_path: Path, caches: dict[str, Path], out_dir: Path, batch_size: int, device_name: str,
                threads: int, precision: str = "auto", symmetries: int = 1, features_dir: Path | None = None) -> None:
    """Embed each view's image cache with that view's encoder into parquet shards `<view>-NNNN.parquet`.

    `precision` auto = bf16 autocast on CUDA, fp32 on CPU; the embeddings are written as float32 either way.
    `symmetries` > 1 averages similarities over that many joint flips/rotations (`cvgl.embed.embed_images`).
    `features_dir` (`features_stage`, for a frozen backbone): only the head and neck run, on the stored features;
    refused unless they were taken by this model's very backbone under the same symmetries.
    """
    ckpt = load_checkpoint(model_path)
    device = resolve(job_settings(ckpt["config"], threads=threads, device=device_name))
    # The checkpoint holds every weight: the backbone's pretrained weights are not read again.
    model, _ = model_from_checkpoint(model_path, device)
    if features_dir is not None:
        features = open_features(features_dir, model, symmetries)
        for view, (ids, feats) in features.items():
            emb = embed_features(model, feats, view, batch_size, device, f"embed {view} features")
            write_embedding_shards(list(ids), emb, out_dir, view)
        return
    dtype = autocast_dtype(precision, device)
    for view, cache in caches.items():
        ids, images = read_image_cache(cache, threads=threads)
        emb = embed_images(model, images, view, batch_size, device, f"embed {Path(cache).stem}", dtype, symmetries)
        write_embedding_shards(list(ids), emb, out_dir, view)


#: The record `features_stage` writes beside the arrays, and `open_features` checks.
FEATURES_META = "features.json"


def features_stage(model_path: Path, caches: dict[str, Path], out_dir: Path, batch_size: int, device_name: str,
                   threads: int, precision: str = "auto", symmetries: int = 1) -> None:
    """A frozen backbone's features of each view's image cache, once for every round (`model.freeze: backbone`):
    `<out>/<view>.npy` (N, k, *feature shape) float16 with an ids sidecar, and `features.json` recording the
    backbone's fingerprint, the symmetries and the shapes. Written into a temporary folder renamed into place."""
    ckpt = load_checkpoint(model_path)
    device = resolve(job_settings(ckpt["config"], threads=threads, device=device_name))
    model, _ = model_from_checkpoint(model_path, device)
    if not model.backbone_frozen():
        raise ValueError(f"{model_path}: its backbone is not frozen (model.freeze is "
                         f"{ckpt['config']['model'].get('freeze', 'none')!r}), so its features change every round; "
                         "features are cached only with model.freeze: backbone")
    dtype = autocast_dtype(precision, device)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shapes = {}
    for view, cache in caches.items():
        ids, images = read_image_cache(cache, threads=threads)
        shapes[view] = list(write_backbone_features(model, images, view, batch_size, device, tmp / f"{view}.npy",
                                                    dtype, symmetries, f"features {Path(cache).stem}"))
        write_ids_sidecar(ids, tmp / f"{view}.npy")
    write_json({"fingerprint": model.backbone_fingerprint(), "symmetries": symmetries, "shapes": shapes,
                "dtype": np.dtype(FEATURE_DTYPE).name, "model": str(model_path)}, tmp / FEATURES_META)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def open_features(features_dir: Path, model: CrossViewModel, symmetries: int
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (ids, memory-mapped features) of each view in `features_dir`, after checking that `model`'s backbone
    and `symmetries` are those they were taken with (a stale cache would give wrong embeddings silently)."""
    features_dir = Path(features_dir)
    meta = read_json(features_dir / FEATURES_META, "feature record")
    if meta["fingerprint"] != model.backbone_fingerprint():
        raise ValueError(f"{features_dir}: features of another backbone (taken with {meta['model']}); this model's "
                         "backbone differs, so they cannot stand in for its images (was the backbone trained?)")
    if meta["symmetries"] != symmetries:
        raise ValueError(f"{features_dir}: features under {meta['symmetries']} symmetries, {symmetries} asked")
    out = {}
    for view in meta["shapes"]:
        path = features_dir / f"{view}.npy"
        ids = read_parquet(ids_sidecar(path), ["image_id"])["image_id"].to_numpy(dtype=object)
        with reading(path, "feature array (.npy)"):
            feats = np.load(path, mmap_mode="r", allow_pickle=False)
        if list(feats.shape) != meta["shapes"][view] or len(ids) != len(feats):
            raise ValueError(f"{path}: shape {feats.shape} and {len(ids)} ids, {FEATURES_META} records "
                             f"{meta['shapes'][view]}")
        out[view] = (ids, feats)
    return out


def index_stage(embeddings_dir: Path, factory: str, out: Path, threads: int) -> None:
    """Index a split's satellite embeddings with FAISS (ids in a sidecar)."""
    set_threads(threads)
    ids, emb = read_embeddings(embeddings_dir, "satellite")
    write_index(build_index(emb, factory), list(ids), out)


def pseudo_label_stage(embeddings_dir: Path, index_path: Path | None, labeled_path: Path, round_index: int,
                       cfg: dict[str, Any], out: Path, threads: int, prior_dir: Path | None = None,
                       device_name: str = "cpu") -> None:
    """Adaptive Mutual Matching on the train split: round n's label table from the round n-1 embeddings.

    Reads embeddings, the labeled subset and (with `labels.prior_weight` > 0) the projection prior's pixel
    descriptors only; `correct` stays empty (diagnostics fill it elsewhere). `labels.csls_k` > 0 rescales the
    scores against hubs (`cvgl.labels.csls_blocks`) before matching. Exact matching (`labels.index: Flat`) runs
    its blocked passes on `device_name` (a GPU where the job has one) and reads no index; an approximate one
    searches the FAISS index at `index_path`.
    """
    cfg = with_section_defaults(cfg, "labels")
    torch.set_num_threads(max(1, threads))
    set_threads(threads)
    g_ids, ground = read_embeddings(embeddings_dir, "ground")
    s_ids, satellite = read_embeddings(embeddings_dir, "satellite")
    t0 = time.perf_counter()
    weight, csls_k = float(cfg["prior_weight"]), int(cfg["csls_k"])
    if weight > 0 or csls_k > 0 or cfg["index"] == "Flat":
        # Exact: one blocked N x M product gives both directions (a flat index would need two); the prior's
        # fused scores and the CSLS rescaling exist only this way.
        prior = read_prior(prior_dir, g_ids, s_ids) if weight > 0 and prior_dir is not None else None
        chunk = block_rows(cfg["chunk"], len(satellite))
        matches = mutual_matches(ground, satellite, chunk, prior=prior, prior_weight=weight,
                                 prior_metric=cfg["prior_metric"], csls_k=csls_k, device=resolve_device(device_name))
    else:
        # Approximate: both directions through indices of the configured kind (never an N x M product).
        if index_path is None:
            raise ValueError(f"labels.index {cfg['index']!r}: approximate matching needs the index (--index)")
        index, index_ids = read_index(index_path)
        if list(index_ids) != list(s_ids):
            raise ValueError(f"{index_path}: its ids do not match the satellite embeddings in {embeddings_dir}")
        set_search_parameters(index, cfg["search"])
        matches = mutual_matches_faiss(ground, satellite, index, cfg["index"], cfg["search"])
    threshold = round_threshold(round_index, cfg)
    labeled = read_parquet(labeled_path, ["ground_id", "satellite_id"])
    table = build_label_table(list(g_ids), list(s_ids), matches, threshold, labeled if len(labeled) else None,
                              require_mutual=cfg["mutual"])
    write_label_table(table, out)
    print(f"[labels round {round_index}] threshold {threshold:.4f}: {int(table.mutual.sum())} mutual, "
          f"{int(table.kept.sum())} kept of {len(table)} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)


def round_threshold(round_index: int, cfg: dict[str, Any]) -> float:
    """Round n's margin threshold: the curriculum of `rounds.threshold_schedule` from `rounds.t0`, or 0 with
    `labels.margin_filter: false` (the paper's "without threshold filter" ablation: every mutual pair kept)."""
    if not cfg.get("margin_filter", True):
        return 0.0
    return margin_threshold(round_index, cfg["t0"], cfg["rounds"], cfg.get("threshold_schedule", "cosine"))


def evaluate_stage(embeddings_dir: Path, manifest_dir: Path, round_index: int, labels_path: Path | None,
                   out: Path, model_path: Path | None = None, top_k: int = 10,
                   radii_m: tuple[float, ...] = (25.0, 50.0, 100.0)) -> dict[str, Any]:
    """Recall@K of the test panoramas against every test tile, plus the round's pseudo-label counts.

    Also writes `retrievals.parquet` beside `out`: per test panorama the rank of its true tile, its `top_k`
    tiles and scores and, where the manifest has coordinates, the top-1's distance (then `R@<r>m` for each of
    `radii_m` and the median top-1 error join the metrics).
    """
    q_ids, query = read_embeddings(embeddings_dir, "ground")
    r_ids, reference = read_embeddings(embeddings_dir, "satellite")
    truth = read_truth(manifest_dir)
    pos = truth[truth.kind == "positive"].drop_duplicates("ground_id").set_index("ground_id")["satellite_id"]
    r_row = {r: i for i, r in enumerate(r_ids)}
    missing = [q for q in q_ids if q not in pos.index or pos[q] not in r_row]
    if missing:
        raise ValueError(f"{manifest_dir}/truth.parquet: no test satellite for {len(missing)} test panoramas")
    positive = np.array([r_row[pos[q]] for q in q_ids])
    top, scores, ranks = ranked_retrievals(query, reference, top_k, positive)
    assert ranks is not None
    table = retrieval_table(q_ids, r_ids, top, scores, ranks, read_images(manifest_dir))
    write_parquet(table, Path(out).with_name("retrievals.parquet"))
    metrics: dict[str, Any] = {"round": round_index, "queries": len(q_ids), "gallery": len(r_ids)}
    metrics.update(recall_at_k(ranks, len(r_ids)))
    metrics.update(distance_metrics(table["top1_distance_m"].to_numpy(), radii_m))
    semi = truth[truth.kind == "semi_positive"]
    if len(semi):  # VIGOR: the hit rate beside R@K
        by_ground = semi[semi.satellite_id.isin(r_row.keys())].groupby("ground_id").satellite_id.agg(list)
        width = max(1, int(by_ground.map(len).max()) if len(by_ground) else 1)
        rows = np.full((len(q_ids), width), -1, dtype=np.int64)
        for i, q in enumerate(q_ids):
            sats = by_ground.get(q, [])
            rows[i, :len(sats)] = [r_row[x] for x in sats]
        metrics["hit_rate"] = hit_rate(query, reference, positive, rows)
    if labels_path is not None:
        s = label_summary(read_label_table(labels_path))
        metrics.update(labels_kept=s["kept"], labels_correct=s["correct"], labels_precision=s["precision"],
                       labels_coverage=s["coverage"], labels_mutual=s["mutual"])
    if model_path is not None:
        history = load_checkpoint(model_path).get("history", [])
        metrics["train_seconds"] = round(sum(h["seconds"] for h in history), 2)
        metrics["train_epochs"] = len(history)
    write_json(metrics, out)
    print(f"[evaluate round {round_index}] " + " ".join(
        f"{k} {100 * metrics[k]:.2f}" for k in ("R@1", "R@5", "R@10", "R@1%")), file=sys.stderr)
    return metrics
