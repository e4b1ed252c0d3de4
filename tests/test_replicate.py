"""Tests of benchmarks/replicate.py without training: CSV reading, targets, Table II, the JSON, the data folder."""

import csv
import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "replicate.py"
CONDITIONS = ("ov100", "ov25")


@pytest.fixture(scope="module")
def rep():
    spec = importlib.util.spec_from_file_location("replicate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _fake_run(folder, levels, si_sdri, shares=None, epochs=3):
    """A recipe output folder as the test stage (test_stage.py) writes it.

    ``si_sdri``: gating mode -> SI-SDRi, the same in every condition;
    ``shares``: segment type -> frames per level (internal gating, per condition).
    """
    folder.mkdir(parents=True)
    summary = []
    for mode, value in si_sdri.items():
        u = (
            levels[0]
            if mode.startswith("static_")
            else float(mode.split("_")[1])
            if mode.startswith("external")
            else 0.5
        )
        for condition in CONDITIONS + ("all",):
            summary.append(
                {
                    "condition": condition,
                    "gating": mode,
                    "si_sdri": value,
                    "avg_utilization": u,
                    "gmacs": 0.4 + 1.6 * u,
                    "count": 2,
                }
            )
    _write_csv(folder / "test_summary.csv", summary)
    headline = "internal" if "internal" in si_sdri else next(iter(si_sdri))
    shares = shares or {name: [10] * len(levels) for name in ("silence", "single", "overlap")}
    rows = []
    for condition in CONDITIONS:
        for segment_type, frames in shares.items():
            for level, count in zip(levels, frames):
                rows.append(
                    {
                        "condition": condition,
                        "gating": headline,
                        "segment_type": segment_type,
                        "utilization": level,
                        "share": count / sum(frames),
                        "frames": count,
                    }
                )
    _write_csv(folder / "utilization_by_segment.csv", rows)
    (folder / "train_log.txt").write_text(
        "".join(f"epoch: {e}, lr: 5.00e-04 - valid loss: 1.0\n" for e in range(1, epochs + 1))
    )
    (folder / "hyperparams.yaml").write_text(
        f"seed: 1234\nutilization_levels: {list(levels)}\nN_encoder_out: 128\nsd_b: 10.0\n"
        "MaskNet: !new:speechbrain_dsn.masker.DSNMasker\n    in_channels: 128\n"
    )
    return folder


GOOD = {
    "static_0.125": ((0.125,), {"static_0.125": 1.0}, None),
    "static_1": ((1.0,), {"static_1": 3.0}, None),
    # internal 2.5 dB at U=0.5: the line gives 1 + 2 * 0.375 / 0.875 = 1.857 dB
    "dsn": (
        (0.125, 1.0),
        {"internal": 2.5, "external_0.125": 0.2, "external_1": 2.9},
        {"silence": [90, 10], "single": [50, 50], "overlap": [10, 90]},
    ),
    "dsn_nodrop": (
        (0.125, 1.0),
        {"internal": 2.6, "external_0.125": -2.0, "external_1": 2.0},
        {"silence": [80, 20], "single": [60, 40], "overlap": [20, 80]},
    ),
}


def _networks(rep, tmp_path, spec):
    return {name: rep.summarize_run(_fake_run(tmp_path / name, *args)) for name, args in spec.items()}


def test_summarize_run_pools_frames_over_conditions(rep, tmp_path):
    net = rep.summarize_run(_fake_run(tmp_path / "dsn", *GOOD["dsn"]))
    assert net["headline_gating"] == "internal" and net["levels"] == [0.125, 1.0]
    assert net["si_sdri"] == 2.5 and net["avg_utilization"] == 0.5
    assert net["si_sdri_by_condition"] == {"ov100": 2.5, "ov25": 2.5}
    silence = net["utilization_by_segment"]["silence"]
    assert silence["frames"] == 200
    assert silence["mean_utilization"] == pytest.approx(0.9 * 0.125 + 0.1 * 1.0)
    assert silence["shares"] == {"0.125": pytest.approx(0.9), "1": pytest.approx(0.1)}
    assert net["gating_modes"]["external_0.125"]["si_sdri"]["all"] == 0.2
    assert net["epochs_trained"] == 3 and net["hparams"]["sd_b"] == 10.0


def test_good_numbers_pass_every_target_and_the_json_holds_them(rep, tmp_path):
    networks = _networks(rep, tmp_path, GOOD)
    results = build = rep.build_results({"epochs": 3}, networks)
    assert {k: t["status"] for k, t in results["targets"].items()} == dict.fromkeys("abcd", "PASS")
    assert results["passed"] == "4/4"
    c = results["targets"]["c"]["measured"]
    assert c["line_si_sdri"] == pytest.approx(1.0 + 2.0 * 0.375 / 0.875)
    assert c["margin_db"] == pytest.approx(2.5 - c["line_si_sdri"])
    assert results["targets"]["d"]["measured"]["gap_to_static_db"] == pytest.approx(0.8)
    assert json.loads(json.dumps(build))["networks"]["dsn"]["utilization_by_segment"]["overlap"]["frames"] == 200
    table = results["table2"]["markdown"].splitlines()
    assert table[2] == "| static | - | - | 1.00 | 3.00 |"
    assert table[3] == "| DSN {0.125, 1.0} | no | 2.60 (0.50) | -2.00 | 2.00 |"
    assert table[4] == "| DSN {0.125, 1.0} | yes | 2.50 (0.50) | 0.20 | 2.90 |"


BAD = {
    # static U=1.0 only 0.5 dB above U=0.125
    "a": ("static_1", ((1.0,), {"static_1": 1.5}, None)),
    # more full-width frames on silence than on overlap
    "b": (
        "dsn",
        (
            (0.125, 1.0),
            {"internal": 2.5, "external_0.125": 0.2, "external_1": 2.9},
            {"silence": [10, 90], "single": [50, 50], "overlap": [90, 10]},
        ),
    ),
    # 1.5 dB at U=0.5 is below the line (1.857 dB)
    "c": (
        "dsn",
        (
            (0.125, 1.0),
            {"internal": 1.5, "external_0.125": 0.2, "external_1": 2.9},
            {"silence": [90, 10], "single": [50, 50], "overlap": [10, 90]},
        ),
    ),
    # dropout did not help external gating at U=0.125
    "d": (
        "dsn_nodrop",
        (
            (0.125, 1.0),
            {"internal": 2.6, "external_0.125": 0.5, "external_1": 2.0},
            {"silence": [80, 20], "single": [60, 40], "overlap": [20, 80]},
        ),
    ),
}


@pytest.mark.parametrize("target", sorted(BAD))
def test_bad_numbers_fail_their_target_only(rep, tmp_path, target):
    name, args = BAD[target]
    results = rep.build_results({}, _networks(rep, tmp_path, {**GOOD, name: args}))
    status = {k: t["status"] for k, t in results["targets"].items()}
    assert status == {**dict.fromkeys("abcd", "PASS"), target: "FAIL"}
    assert results["targets"][target]["passed"] is False and results["passed"] == "3/4"


def test_external_gating_too_far_from_the_static_network_fails(rep, tmp_path):
    dsn = ((0.125, 1.0), {"internal": 2.5, "external_0.125": -0.6, "external_1": 2.9}, GOOD["dsn"][2])
    results = rep.build_results({}, _networks(rep, tmp_path, {**GOOD, "dsn": dsn}))
    assert results["targets"]["d"]["status"] == "FAIL"
    assert results["targets"]["d"]["measured"]["gap_to_static_db"] == pytest.approx(1.6)


def test_a_missing_network_is_reported_not_passed(rep, tmp_path):
    spec = {k: v for k, v in GOOD.items() if k != "dsn_nodrop"}
    results = rep.build_results({}, _networks(rep, tmp_path, spec))
    assert results["targets"]["d"]["status"] == "MISSING" and not results["targets"]["d"]["passed"]
    assert "| yes | 2.50 (0.50) |" in results["table2"]["markdown"]
    assert "| no | - | - | - |" in results["table2"]["markdown"]


def test_plots_and_table_are_written(rep, tmp_path):
    written = rep.make_plots(_networks(rep, tmp_path, GOOD), tmp_path / "plots")
    assert [pathlib.Path(p).name for p in written] == ["fig9_level_shares.png", "fig10_tradeoff.png", "table2.md"]
    assert all(pathlib.Path(p).stat().st_size > 1000 for p in written[:2])
    assert "| static | - | - | 1.00 | 3.00 |" in (tmp_path / "plots" / "table2.md").read_text()


def test_speaker_folder_links_every_corpus_and_keeps_clashing_names_apart(rep, tmp_path):
    source = tmp_path / "speech"
    for name in (
        "libri/17/a.flac",
        "libri/17/b.wav",
        "arctic/17/c.wav",
        "arctic/aew/d.wav",
        "libri/LICENSE.TXT",
        "arctic/aew/notes.txt",
    ):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"x")
    corpus_of = rep.build_speaker_folder(source, tmp_path / "speakers")
    assert corpus_of == {"libri-17": "libri", "arctic-17": "arctic", "aew": "arctic"}
    linked = sorted(
        str(p.relative_to(tmp_path / "speakers")) for p in (tmp_path / "speakers").rglob("*") if p.is_file()
    )
    assert linked == ["aew/d.wav", "arctic-17/c.wav", "libri-17/a.flac", "libri-17/b.wav"]
    assert (tmp_path / "speakers" / "aew" / "d.wav").resolve() == (source / "arctic/aew/d.wav").resolve()
    rep.build_speaker_folder(source, tmp_path / "speakers")  # idempotent


def test_speaker_split_detects_shared_speakers(rep, tmp_path):
    def pairs(path, spk_pairs):
        _write_csv(
            path,
            [
                {"ID": f"p{i}", "s1_spk": a, "s2_spk": b, "s1_wav": f"{a}.wav", "s2_wav": f"{b}.wav"}
                for i, (a, b) in enumerate(spk_pairs)
            ],
        )

    pairs(tmp_path / "train.csv", [("a", "b"), ("b", "c")])
    pairs(tmp_path / "valid.csv", [("d", "e")])
    pairs(tmp_path / "test_ov100.csv", [("f", "g")])
    split = rep.speaker_split(tmp_path)
    assert split["disjoint"] and split["train"]["speakers"] == ["a", "b", "c"] and split["train"]["utterances"] == 3
    pairs(tmp_path / "test_ov25.csv", [("f", "a")])
    assert not rep.speaker_split(tmp_path)["disjoint"]


def test_jobs_run_the_recipe_on_the_shared_data_longest_first(rep, tmp_path):
    args = rep._parse_args(["--epochs", "5", "--output", str(tmp_path)])
    command = rep.job_command("static_0.125", args, tmp_path / "run", tmp_path / "spk", tmp_path / "data")
    assert command[1:3] == ["train.py", "hparams/static_small.yaml"]
    options = dict(zip(command[3::2], command[4::2]))
    assert options["--utilization_levels"] == "[0.125]" and options["--skip_prep"] == "True"
    assert options["--data_save_folder"] == str(tmp_path / "data") and options["--number_of_epochs"] == "5"
    assert rep.job_command("dsn_nodrop", args, tmp_path, tmp_path, tmp_path)[-2:] == ["--gating_dropout", "0.0"]
    costs = [rep.COST_MINUTES[name][0] for name in rep.NETWORKS]
    assert costs == sorted(costs, reverse=True)
    assert rep.planned_minutes(rep.DEFAULT_EPOCHS, 2) <= 88  # plus preparation and the report: 90 min
    smoke = rep._parse_args(["--smoke", "--output", str(tmp_path)])
    assert smoke.epochs == 1 and smoke.json.parent == tmp_path and smoke.bundle.parent == tmp_path


@pytest.mark.parametrize("yaml, levels", [("dsn_small.yaml", (0.125, 1.0)), ("static_small.yaml", (1.0,))])
def test_small_yamls_build_the_small_model(yaml, levels, tmp_path):
    from speechbrain_dsn.recipe import load_hparams

    hp = load_hparams(str(SCRIPT.parents[1] / "hparams" / yaml), {"output_folder": str(tmp_path)})
    masknet = hp["modules"]["masknet"]
    assert masknet.utilization_levels == levels and (masknet.gating is None) == (len(levels) == 1)
    assert (hp["N_encoder_out"], hp["num_dual_blocks"], hp["num_layers"], hp["nhead"], hp["d_ffn"]) == (
        128,
        1,
        2,
        8,
        512,
    )
    assert (hp["lr"], hp["alpha"], hp["sd_a"], hp["sd_b"], hp["gating_dropout"]) == (5e-4, 1.0, 0.05, 10.0, 0.3)
    assert (hp["full_width_warmup_epochs"], hp["alpha_warmup_epochs"], hp["number_of_epochs"]) == (2, 0, 11)
    assert hp["dynamic_mixing"] and hp["training_signal_len"] == 32000
    assert (hp["lr_scheduler"].factor, hp["batch_size"]) == (0.5, 2)
