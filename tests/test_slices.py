"""Each stage's slice of a resolved config and the switches several keys decide, read from one place
(cvgl.config), in-process: the rules, the CLI and the benchmarks hand the stages what these functions return."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvgl import config as cc
from cvgl.cli import apply_threads, build_parser, fakes_dir
from cvgl.translate import make_translator
from cvgl.translate.cyclegan import CycleGANConfig

REPO = Path(__file__).resolve().parents[1]
TINY = [REPO / "config.yaml", REPO / "tests" / "tiny.yaml"]


@pytest.fixture(scope="module")
def tiny() -> dict:
    return cc.load_config(TINY)


def test_load_config_resolves_files_as_the_snakefile_does(tiny: dict) -> None:
    layers = [cc.read_config_file(p) for p in TINY]
    assert tiny == cc.resolve_config(cc.merge_configs(*layers), cc.SCHEMA_PATH, TINY, cc.DEMO_CONFIG)
    assert tiny["run"] == "tiny" and cc.results_dir(tiny) == "results/tiny"
    overridden = cc.load_config(TINY, {"rounds": {"count": 1}})
    assert overridden["rounds"]["count"] == 1 and overridden["rounds"]["epochs"] == tiny["rounds"]["epochs"]


def test_merging_is_key_by_key_and_leaves_the_layers_alone() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    top = {"a": {"c": 3}, "d": [2]}
    assert cc.merge_configs(base, top) == {"a": {"b": 1, "c": 3}, "d": [2]}
    assert base == {"a": {"b": 1, "c": 2}, "d": [1]}


def test_a_config_file_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(cc.ConfigError, match=f"{bad}: a config file holds a mapping"):
        cc.read_config_file(bad)
    bad.write_text("rounds: {count: [\n")
    with pytest.raises(cc.ConfigError, match=f"{bad}: not valid YAML"):
        cc.read_config_file(bad)


def test_a_slice_given_by_hand_takes_the_schemas_defaults_and_keeps_its_own_keys() -> None:
    labels = cc.with_section_defaults({"chunk": 8, "t0": 0.05}, "labels")
    assert labels["chunk"] == 8 and labels["t0"] == 0.05  # given keys, and keys of another section, stay
    assert labels["index"] == "Flat" and labels["prior_metric"] == "l1" and labels["csls_k"] == 0
    with pytest.raises(KeyError, match="labels.chunks: not a key of the config schema"):
        cc.with_section_defaults({}, "labels", "chunks")


def test_the_cyclegans_defaults_are_the_schemas() -> None:
    gan = CycleGANConfig()
    assert {k: getattr(gan, k) for k in cc.schema_defaults("translate", "cyclegan")} == cc.schema_defaults(
        "translate", "cyclegan")
    assert (gan.size, gan.blocks, gan.epochs + gan.epochs_decay, gan.batch_size) == (320, 9, 200, 1)  # the paper's


def test_training_slices_carry_no_job_resources_and_the_cross_view_continues_the_schedule(tiny: dict) -> None:
    for piece in (cc.intra_view_slice(tiny), cc.cross_view_slice(tiny), cc.round_slice(tiny, "1")):
        assert "threads" not in piece and "data" not in piece
        assert piece["model"] == tiny["model"] and piece["optim"] == tiny["optim"]
    assert cc.intra_view_slice(tiny)["stage"] == tiny["coldstart"]["intra"]
    assert cc.cross_view_slice(tiny)["schedule_offset"] == tiny["coldstart"]["intra"]["epochs"]
    assert cc.round_slice(tiny, 2)["stage"] == cc.round_settings(tiny["rounds"], 2)
    label = cc.pseudo_label_slice(tiny, 1)
    assert label["t0"] == tiny["rounds"]["t0"] and label["rounds"] == tiny["rounds"]["count"]
    assert label["index"] == tiny["labels"]["index"]


def test_job_settings_put_the_jobs_resources_in_without_touching_the_slice() -> None:
    piece = {"seed": 1, "threads": 2}
    assert cc.job_settings(piece, threads=4, loader_workers=3, device="cpu") == {
        "seed": 1, "threads": 4, "data": {"workers": 3}, "device": "cpu"}
    assert cc.job_settings(piece) == piece and piece == {"seed": 1, "threads": 2}


def test_the_cold_starts_fakes_say_what_they_are(tiny: dict) -> None:
    def with_(**sections: dict) -> dict:
        return cc.merge_configs(tiny, sections)

    assert cc.fake_source(tiny) == "translated"
    assert cc.fake_source(with_(translate={"method": "none"})) == "projected"  # raw projections
    assert cc.fake_source(with_(coldstart={"projection": False})) is None  # the panorama itself
    assert cc.cold_start_fakes(with_(coldstart={"cross": {"epochs": 0}})) is None
    assert cc.keeps_fake_pairs(with_(rounds={"keep_fake_pairs": True}, translate={"method": "none"})) == "projected"
    assert cc.keeps_fake_pairs(with_(rounds={"keep_fake_pairs": False})) is None
    assert cc.fakes_argument("projected", "results/tiny/projected") == "--projected results/tiny/projected"
    with pytest.raises(ValueError, match="translated or projected"):
        cc.fakes_argument("panorama", "x")


def test_a_training_stage_takes_one_kind_of_fake_from_the_command_line() -> None:
    base = ["cross-view", "--config", "{}", "--ground-cache", "g.npy", "--out", "m.pt"]
    assert fakes_dir(build_parser().parse_args([*base, "--projected", "p"])) == Path("p")
    assert fakes_dir(build_parser().parse_args([*base, "--translated", "t"])) == Path("t")
    assert fakes_dir(build_parser().parse_args(base)) is None
    with pytest.raises(ValueError, match="--translated and --projected"):
        fakes_dir(build_parser().parse_args([*base, "--translated", "t", "--projected", "p"]))
    given = build_parser().parse_args([*base, "--threads", "3", "--loader-workers", "2"])
    apply_threads(given)
    assert given.config == {"threads": 3, "data": {"workers": 2}}


def test_no_translator_is_fitted_for_translate_method_none() -> None:
    with pytest.raises(ValueError, match="translate.method none: no translator to fit; the cold start reads the raw"):
        make_translator("none")


def test_labelling_switches(tiny: dict) -> None:
    assert cc.uses_prior(tiny) == (tiny["labels"]["prior_weight"] > 0)
    assert not cc.approximate_labels(tiny)
    assert cc.approximate_labels(cc.merge_configs(tiny, {"labels": {"index": "IVF4,Flat"}}))
    assert cc.embedding_symmetries(tiny, "train") == tiny["labels"]["symmetries"]
    assert cc.embedding_symmetries(tiny, "test") == 1


def test_a_localize_entry_gets_the_schemas_defaults_and_a_missing_one_is_named() -> None:
    cfg = cc.load_config(TINY, {"localize": {"mine": {"gallery": "g.csv", "queries": "q/", "top_k": 3}}})
    assert cc.localize_job(cfg, "mine") == {"gallery": "g.csv", "queries": "q/", "top_k": 3, "gallery_split": "test",
                                            "query_split": "test", "round": None, "index": "Flat", "search": None}
    with pytest.raises(KeyError, match=r"localize: no entry 'other' .*\(have: \['mine'\]\)"):
        cc.localize_job(cfg, "other")


def test_the_dataset_inputs_are_the_world_or_the_split_files(tiny: dict, tmp_path: Path) -> None:
    assert cc.dataset_root(tiny) == "results/tiny/dataset" and cc.dataset_inputs(tiny) == ["results/tiny/dataset"]
    assert cc.manifest_slice(tiny) == {**tiny["dataset"], "layout": "cvusa"}
    real = {**tiny, "dataset": {**tiny["dataset"], "name": "cvact", "root": str(tmp_path)}}
    with pytest.raises(FileNotFoundError, match=r"dataset.root: .*ACT_data\.mat does not exist \(cvact layout"):
        cc.dataset_inputs(real)
    (tmp_path / "ACT_data.mat").write_bytes(b"")
    assert cc.dataset_root(real) == str(tmp_path) and cc.dataset_inputs(real) == [str(tmp_path / "ACT_data.mat")]


@pytest.mark.parametrize(("count", "every", "expected"), [
    (2, 1, [0, 1, 2]), (8, 3, [0, 3, 6, 8]), (8, 8, [0, 8]), (3, 5, [0, 3]), (0, 4, [0]),
])
def test_the_evaluated_rounds_are_the_cold_start_every_kth_and_the_last(count: int, every: int,
                                                                          expected: list[int]) -> None:
    config = {"rounds": {"count": count}, "evaluate": {"every": every}}
    assert cc.evaluated_rounds(config) == expected
