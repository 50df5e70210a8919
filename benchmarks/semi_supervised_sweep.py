"""Semi-supervised sweep: final R@1 for several `gt_ratio` values from one finished run's cold start.

The cold start does not depend on `gt_ratio`, so every ratio starts from the same `round-0/model.pt` and runs the
rounds of the config with the library's own functions (the same ones the workflow's rules call: mutual matching,
fused with the run's projection prior when `labels.prior_weight` > 0 and rescaled when `labels.csls_k` > 0, label
table with the seeded labeled subset, round training with the cold start's pairs and `rounds.fake_share`, test
recall). With `gt_ratio: 0` it follows the workflow's rounds (`rounds.overrides` too); each other ratio costs the
rounds only, not a whole workflow run.
A small ratio (0.1: 120 true pairs on the default world) bounds what first labels of that coverage can bring.
`steps` is the training steps of all rounds so far: with every pair labelled an epoch holds more pairs, so compare
ratios at equal steps by giving the supervised sweep fewer `rounds.epochs` (its own `--configfile`).

    python benchmarks/semi_supervised_sweep.py results/synth-unsupervised --ratios 0 0.01 0.05 0.1 0.2 1.0

Two labelling levers that the workflow does not have, for `--ratios 0` against a supervised run at equal steps:
`--consistent` (below t0 a pair stays kept only where the previous round matched it mutually too) and
`--ensemble` (label with the mean of this round's and the previous round's similarities).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cvgl.config import (
    embedding_symmetries,
    keeps_fake_pairs,
    load_config,
    pseudo_label_slice,
    round_settings,
    round_slice,
    uses_prior,
)
from cvgl.data.manifest import read_images, read_truth, select_labeled
from cvgl.embed import embed_images
from cvgl.io import read_image_cache
from cvgl.label_table import fill_correct, label_summary
from cvgl.labels import build_label_table, mutual_matches
from cvgl.metrics import recall_at_k, retrieval_ranks
from cvgl.pipeline import load_projections, round_threshold
from cvgl.prior import read_prior
from cvgl.train import build_model, load_checkpoint, round_stage, run_epoch, setup_torch


def consistent_with(table: pd.DataFrame, previous: pd.DataFrame | None, t0: float) -> pd.DataFrame:
    """The cross-round consistency lever (`--consistent`, not in the workflow): below round 1's threshold t0 a pair
    stays kept only if the previous round's model matched the same pair mutually too; reads no truth."""
    if previous is None:
        return table
    mutual = previous[previous.mutual]
    before = set(zip(mutual.ground_id, mutual.satellite_id, strict=True))
    same = np.array([pair in before for pair in zip(table.ground_id, table.satellite_id, strict=True)], dtype=bool)
    confident = table.margin.to_numpy() >= np.float32(t0)
    return table.assign(kept=table.kept.to_numpy() & (same | confident | (table.source == "labeled").to_numpy()))


def with_previous(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """The ensemble lever (`--ensemble`, not in the workflow): this round's L2-normalised embeddings beside the
    previous round's, scaled by 1/sqrt(2), so an inner product is the mean of the two models' cosines; reads no
    truth."""
    return (np.concatenate([now, before], axis=1) / np.sqrt(2.0)).astype(now.dtype)


def sweep_one(run: Path, cfg: dict, ratio: float, device: torch.device, consistent: bool = False,
              ensemble: bool = False) -> list[dict]:
    rounds = cfg["rounds"]
    setup_torch(cfg["threads"], cfg["seed"])
    ckpt = load_checkpoint(run / "round-0/model.pt")
    model, optimizer = build_model(ckpt["config"], run / "round-0/model.pt", device)
    g_ids, ground = read_image_cache(run / "cache/train-ground.npy", mmap=False)
    s_ids, sats = read_image_cache(run / "cache/train-satellite.npy", mmap=False)
    q_ids, queries = read_image_cache(run / "cache/test-ground.npy", mmap=False)
    r_ids, refs = read_image_cache(run / "cache/test-satellite.npy", mmap=False)
    truth = read_truth(run / "manifest")
    labeled = select_labeled(truth, read_images(run / "manifest"), ratio, cfg["seed"])
    pos = truth[truth.kind == "positive"].drop_duplicates("ground_id").set_index("ground_id").satellite_id
    r_row = {r: i for i, r in enumerate(r_ids)}
    positive = np.array([r_row[pos[q]] for q in q_ids])
    fake = None
    source = keeps_fake_pairs(cfg)  # as the train_round rule: translated/ or projected/, where the cold start had them
    if source:
        fake = load_projections(run / source, g_ids, tuple(cfg["model"]["satellite_size"]), cfg["threads"])
    labels_cfg = cfg["labels"]
    weight = float(labels_cfg["prior_weight"])
    prior = read_prior(run / "prior", g_ids, s_ids) if uses_prior(cfg) else None  # rows in the caches' order
    out = []
    steps = 0
    previous = None
    before: tuple[np.ndarray, np.ndarray] | None = None
    for n in range(1, rounds["count"] + 1):
        r = round_settings(rounds, n)  # as the workflow's rules
        model.eval()
        k = embedding_symmetries(cfg, "train")  # as the workflow's train embeddings
        g = embed_images(model, ground, "ground", 256, device, symmetries=k)
        s = embed_images(model, sats, "satellite", 256, device, symmetries=k)
        if ensemble:
            this_round = (g, s)
            if before is not None:
                g, s = with_previous(g, before[0]), with_previous(s, before[1])
            before = this_round
        m = mutual_matches(g, s, labels_cfg["chunk"], prior=prior, prior_weight=weight,  # as pseudo_label
                           prior_metric=labels_cfg["prior_metric"], csls_k=labels_cfg["csls_k"])
        label_cfg = pseudo_label_slice(cfg, n)  # as the pseudo_label rule: the switches and the schedule too
        table = build_label_table(list(g_ids), list(s_ids), m, round_threshold(n, label_cfg),
                                  labeled if len(labeled) else None, require_mutual=labels_cfg["mutual"])
        if consistent:
            table, previous = consistent_with(table, previous, label_cfg["t0"]), table
        rc = round_slice(cfg, n)  # as the train_round rule
        stage = round_stage(model, ground, sats, g_ids, s_ids, table[["ground_id", "satellite_id", "kept", "source"]],
                            rc, device, n, fake)
        for e in range(r["epochs"]):
            steps += run_epoch(model, optimizer, stage, rc, e)["steps"]
        model.eval()
        ranks = retrieval_ranks(embed_images(model, queries, "ground", 256, device),
                                embed_images(model, refs, "satellite", 256, device), positive)
        s = label_summary(fill_correct(table, truth))
        out.append({"gt_ratio": ratio, "round": n, "labeled": len(labeled), "kept": s["kept"], "correct": s["correct"],
                    "steps": steps,
                    **{k: round(100 * v, 2) for k, v in recall_at_k(ranks, len(refs)).items()}})
        print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="results/<run> of a finished workflow")
    ap.add_argument("--configfile", type=Path, nargs="+", default=None,
                    help="the run's config files, merged and resolved as the Snakefile does (default: the run's "
                         "resolved config, <run>/report/config.yaml)")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.1, 0.2, 1.0])
    ap.add_argument("--consistent", action="store_true",
                    help="lever: pairs below t0 kept only where the previous round matched them too")
    ap.add_argument("--ensemble", action="store_true",
                    help="lever: label with the mean of this round's and the previous round's similarities")
    a = ap.parse_args()
    cfg = load_config(a.configfile or [a.run / "report/config.yaml"])
    t0 = time.time()
    rows = [r for ratio in a.ratios for r in sweep_one(a.run, cfg, ratio, torch.device("cpu"), a.consistent,
                                                            a.ensemble)]
    table = pd.DataFrame(rows)
    final = table[table["round"] == table["round"].max()]
    print(final[["gt_ratio", "labeled", "R@1", "R@5", "R@10", "R@1%", "kept", "correct", "steps"]]
          .to_string(index=False))
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
