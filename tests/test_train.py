"""Training loops: deterministic, resumable after an interruption, pseudo pairs built honestly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cvgl.train as train
from cvgl.cli import apply_threads, build_parser
from cvgl.train import (
    build_model,
    config_digest,
    cross_view_stage,
    fit,
    pseudo_pairs,
    seeded_generator,
    setup_torch,
)

CFG = {
    "seed": 0, "device": "cpu", "threads": 1,
    "model": {"backbone": "convnext_atto", "head": "gem", "dim": 16, "ground_size": [32, 64],
              "satellite_size": [32, 32], "satellite_mask_radius": 0.5},
    "optim": {"lr": 1e-3, "weight_decay": 0.01, "batch_size": 4},
    "augment": {}, "stage": {"epochs": 3, "smoothing": 0.3},
}


def images(n: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


def train_once(out: Path) -> dict:
    setup_torch(1, CFG["seed"])
    model, opt = build_model(CFG, None, torch.device("cpu"))
    stage = cross_view_stage(model, images(8, (32, 64), 1), images(8, (32, 32), 2), CFG, torch.device("cpu"), 0)
    return fit(model, opt, stage, CFG, out)


def test_interrupted_training_resumes_from_last_epoch_and_matches(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    reference = train_once(tmp_path / "ref.pt")
    real_epoch = train.run_epoch
    calls = {"n": 0}

    def crash_in_third_epoch(model, optimizer, stage, cfg, epoch):  # noqa: ANN001, ANN202
        if epoch == 2 and calls["n"] == 0:
            calls["n"] += 1
            raise KeyboardInterrupt("killed")
        return real_epoch(model, optimizer, stage, cfg, epoch)

    monkeypatch.setattr(train, "run_epoch", crash_in_third_epoch)
    out = tmp_path / "model.pt"
    with pytest.raises(KeyboardInterrupt):
        train_once(out)
    assert not out.exists()  # nothing that looks complete
    state = torch.load(out.with_name("model.pt.state"), weights_only=False)
    assert state["epoch"] == 2
    resumed = train_once(out)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert not out.with_name("model.pt.state").exists()
    for k, v in reference["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert resumed["logit_scale"] == reference["logit_scale"]


def test_pseudo_pairs_use_kept_rows_and_unused_satellites_as_negatives() -> None:
    g_ids = np.array([f"g{i}" for i in range(6)], dtype=object)
    s_ids = np.array([f"s{i}" for i in range(6)], dtype=object)
    labels = pd.DataFrame({"ground_id": g_ids, "satellite_id": ["s3", "s1", "s0", "s5", "s4", "s2"],
                           "kept": [True, True, True, False, False, False], "source": "pseudo"})
    pairs = pseudo_pairs(labels, g_ids, s_ids, labeled_ratio=0.4, gen=seeded_generator(0, "t"))
    assert not pairs.labeled_only
    got = dict(zip(pairs.ground.tolist(), pairs.satellite.tolist(), strict=True))
    assert {g: got[g] for g in (0, 1, 2)} == {0: 3, 1: 1, 2: 0}
    negatives = [got[g] for g in (3, 4, 5)]
    assert sorted(negatives) == [2, 4, 5]  # the satellites no kept pair uses, each once
    assert pairs.labeled.tolist() == [True, True, True, False, False, False]
    few = pseudo_pairs(labels, g_ids, s_ids, labeled_ratio=0.9, gen=seeded_generator(0, "t"))
    assert few.labeled_only and len(few.ground) == 3 and few.labeled.all()


def test_batches_never_hold_one_tile_twice() -> None:
    keys = np.array([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12])  # VIGOR-like shared tiles
    batches = train.distinct_batches(keys, 4, seeded_generator(0, "d"))
    assert len(batches) >= 3
    for b in batches:
        assert len(b) == 4 and len(set(keys[b].tolist())) == 4
    used = np.concatenate(batches)
    assert len(set(used.tolist())) == len(used)  # each pair at most once per epoch
    distinct = np.arange(10)
    a = train.distinct_batches(distinct, 3, seeded_generator(1, "d"))
    b = list(train.permuted_batches(10, 3, seeded_generator(1, "d")))
    assert [x.tolist() for x in a] == [x.tolist() for x in b]  # distinct tiles: the plain shuffle


def test_mixed_epoch_repeats_the_few_labels_and_fills_the_rest_with_fake_pairs() -> None:
    """`rounds.fake_share`: N items per epoch, the labels repeated to (1 - share) x N, fresh fake pairs after."""
    pairs = train.EpochPairs(np.array([4, 7]), np.array([1, 9]), np.ones(2, bool), True)
    n, n_sat = 20, 12
    g, s, lab = train.mixed_epoch(pairs, n_sat, n, 0.5, seeded_generator(0, "m"))
    assert len(g) == len(s) == n and lab.all()
    real = s < n_sat
    assert sorted(zip(g[real].tolist(), s[real].tolist(), strict=True)) == [(4, 1)] * 5 + [(7, 9)] * 5
    fake_g, fake_s = g[~real], s[~real]
    assert len(set(fake_g.tolist())) == 10 and np.array_equal(fake_s, n_sat + fake_g)  # each its own projection
    again = train.mixed_epoch(pairs, n_sat, n, 0.5, seeded_generator(1, "m"))[0]
    assert set(again[10:].tolist()) != set(fake_g.tolist())  # drawn afresh each epoch
    only_labels = train.mixed_epoch(pairs, n_sat, n, 0.0, seeded_generator(0, "m"))[1]
    assert (only_labels < n_sat).all() and len(only_labels) == n


def test_resuming_ignores_the_thread_count_but_no_other_setting() -> None:
    assert config_digest({**CFG, "threads": 1}) == config_digest({**CFG, "threads": 8})
    assert config_digest({**CFG, "seed": 1}) != config_digest(CFG)
    assert config_digest({**CFG, "optim": {**CFG["optim"], "lr": 0.5}}) != config_digest(CFG)


@pytest.mark.parametrize("command", ["intra-view", "cross-view", "train-round"])
def test_a_training_job_takes_its_threads_from_the_command_line(command: str) -> None:
    args = ["--config", json.dumps({**CFG, "threads": 1}), "--ground-cache", "g.npy", "--out", "m.pt"]
    args += {"intra-view": ["--satellite-cache", "s.npy"], "cross-view": [],
             "train-round": ["--init", "i.pt", "--labels", "l.parquet", "--satellite-cache", "s.npy", "--round", "1"]
             }[command]
    given = build_parser().parse_args([command, *args, "--threads", "3"])
    apply_threads(given)
    assert given.config["threads"] == 3 and given.config["seed"] == CFG["seed"]
    default = build_parser().parse_args([command, *args])
    apply_threads(default)
    assert default.config["threads"] == 1


def test_commands_that_are_not_training_keep_their_settings_as_given() -> None:
    # `synth` and `project` take a --config of their own knobs (no `threads` key) beside --threads
    synth = build_parser().parse_args(["synth", "--config", '{"tile_size": 32}', "--out", "d", "--threads", "2"])
    apply_threads(synth)
    assert synth.config == {"tile_size": 32} and synth.threads == 2


def test_worker_processes_feed_the_same_batches_and_train_the_same_weights(tmp_path: Path) -> None:
    """DataLoader workers gather the planned rows from memory-mapped caches, or decode them from the image files
    (`data.cache: false`); the plan fixes every batch, so two workers train bit-identical weights to gathering
    in the process."""
    from PIL import Image

    from cvgl.io import read_image_cache, write_file_list, write_image_cache

    caches = {}
    for view, hw, seed in (("g", (32, 64), 1), ("s", (32, 32), 2)):
        pixels, ids = images(8, hw, seed), [f"{view}{i}" for i in range(8)]
        write_image_cache(pixels, ids, tmp_path / f"{view}.npy")
        files = [tmp_path / f"{view}{i}.png" for i in range(8)]  # lossless: decoding gives the pixels back
        for img, path in zip(pixels, files, strict=True):
            Image.fromarray(img).save(path)
        write_file_list(files, ids, hw, tmp_path / f"{view}.files.parquet")
        caches[view] = {kind: read_image_cache(tmp_path / f"{view}{kind}")[1] for kind in (".npy", ".files.parquet")}
    weights = []
    for workers, kind in ((0, ".npy"), (2, ".npy"), (2, ".files.parquet")):
        ground, satellite = caches["g"][kind], caches["s"][kind]  # memory-mapped or decoded, as stages read them
        cfg = {**CFG, "data": {"workers": workers}}
        setup_torch(1, cfg["seed"])
        model, opt = build_model(cfg, None, torch.device("cpu"))
        fit(model, opt, cross_view_stage(model, ground, satellite, cfg, torch.device("cpu"), 0), cfg,
            tmp_path / f"w{workers}{kind}.pt")
        weights.append(model.state_dict())
        assert train.loader_workers(cfg, torch.device("cpu")) == workers
    for other in weights[1:]:
        for key, value in weights[0].items():
            assert torch.equal(value, other[key]), key
    # the workers setting is not part of what the stage computes: a job resumes across a change of it
    assert config_digest({**CFG, "data": {"workers": 0}}) == config_digest({**CFG, "data": {"workers": 2}})
