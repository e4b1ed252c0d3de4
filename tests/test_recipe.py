"""Recipe smoke tests: train.py --debug on the bundled demo corpus, tiny model."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from speechbrain_dsn.recipe import load_hparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"N_encoder_out": 32, "num_layers": 1, "nhead": 4, "d_ffn": 64, "num_dual_blocks": 1, "chunk_size": 20}
YAMLS = {"static.yaml": (1.0,), "dsn_2level.yaml": (0.125, 1.0), "dsn_3level.yaml": (0.125, 0.5, 1.0)}


@pytest.mark.parametrize("name", sorted(YAMLS))
def test_every_yaml_loads_with_small_overrides(name, tmp_path):
    hp = load_hparams(os.path.join(ROOT, "hparams", name), {**TINY, "output_folder": str(tmp_path)})
    assert hp["modules"]["masknet"].utilization_levels == YAMLS[name]
    assert hp["data_folder"] == "data/demo" and hp["corpus"] == "folder"
    assert (hp["modules"]["masknet"].gating is None) == (len(YAMLS[name]) == 1)


def test_static_yaml_takes_any_single_level(tmp_path):
    hp = load_hparams(
        os.path.join(ROOT, "hparams", "static.yaml"),
        {**TINY, "output_folder": str(tmp_path), "utilization_levels": [0.125]},
    )
    layer = hp["modules"]["masknet"].dual_mdl[0].intra_mdl.mdl.layers[0]
    assert layer.pos_ffn.ffn[0].weight.shape[0] == 8  # ceil(0.125 * 64) neurons, nothing else


def test_paper_configuration_is_the_default(tmp_path):
    hp = load_hparams(os.path.join(ROOT, "hparams", "dsn_3level.yaml"), {"output_folder": str(tmp_path)})
    model = torch.nn.ModuleDict(hp["modules"])
    gating = sum(p.numel() for p in hp["modules"]["masknet"].gating.parameters())
    assert round((sum(p.numel() for p in model.parameters()) - gating) / 1e6, 2) == 13.04
    assert (hp["alpha"], hp["weighting"], hp["sd_a"], hp["sd_b"], hp["gating_dropout"]) == (1.0, "sd", 0.05, 30.0, 0.3)


def _run(yaml, out, debug=True, **overrides):
    options = {**TINY, "test_conditions": "[ov100, ov25]", "gmacs_seconds": 0.25, "n_plots": 1, **overrides}
    args = [sys.executable, "train.py", f"hparams/{yaml}", "--output_folder", str(out)] + (["--debug"] if debug else [])
    for key, value in options.items():
        args += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize("name", sorted(YAMLS))
def test_train_debug_writes_results_summary_plots_and_inference_folder(name, tmp_path):
    out = tmp_path / "run"
    _run(name, out)
    for f in [
        "test_results.csv",
        "test_summary.csv",
        "utilization_by_segment.csv",
        "segsdr_by_segment.csv",
        "plots/tradeoff.png",
        "train_log.txt",
        "hyperparams.yaml",
        "inference/hyperparams.yaml",
        "inference/encoder.ckpt",
        "inference/masknet.ckpt",
        "inference/decoder.ckpt",
    ]:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    with open(out / "test_summary.csv") as fin:
        summary = list(csv.DictReader(fin))
    levels = YAMLS[name]
    expected_modes = (
        {f"static_{levels[0]:g}"} if len(levels) == 1 else {"internal"} | {f"external_{u:g}" for u in levels}
    )
    assert {r["gating"] for r in summary} == expected_modes
    assert {r["condition"] for r in summary} == {"ov100", "ov25", "all"}
    for row in summary:
        if row["gating"].startswith("external_"):
            assert float(row["avg_utilization"]) == pytest.approx(float(row["gating"].split("_")[1]))
        assert float(row["gmacs"]) > 0
    assert list((out / "plots").glob("utilization_*.png"))
    log = (out / "train_log.txt").read_text()
    assert "avg_utilization" in log and "share_u1" in log


def test_checkpoint_test_only_and_inference_folder_in_stock_sepformer_separation(tmp_path):
    from speechbrain.inference.separation import SepformerSeparation

    out = tmp_path / "run"
    small = dict(number_of_epochs=1, num_train=2, num_valid=1, num_test=1, test_conditions="[ov100]")
    _run("dsn_2level.yaml", out, debug=False, **small)
    assert list((out / "save").glob("CKPT*"))
    first = (out / "test_results.csv").read_text()
    # --test_only reloads the best checkpoint and evaluates it again, identically
    result = _run("dsn_2level.yaml", out, debug=False, test_only=True, **small)
    assert "Loading a checkpoint" in result.stderr + result.stdout + (out / "log.txt").read_text()
    assert (out / "test_results.csv").read_text() == first

    separator = SepformerSeparation.from_hparams(source=str(out / "inference"), savedir=str(tmp_path / "pretrained"))
    mix_file = next((out / "data" / "test" / "ov100").glob("*_mix.wav"))
    est = separator.separate_file(str(mix_file))
    assert est.shape[-1] == 2 and torch.isfinite(est).all()


def test_complexity_cli_reads_a_variant_yaml():
    result = subprocess.run(
        [sys.executable, "-m", "speechbrain_dsn.complexity", "hparams/dsn_2level.yaml", "--seconds", "0.25"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["utilization"] for r in rows] == [0.125, 1.0]
    assert rows[0]["gmacs"] < rows[1]["gmacs"] and rows[1]["params_m"] == 13.04


def test_official_condition_and_sdri_in_the_reports(tmp_path):
    from tests.data_layouts import make_wsj0_2mix

    corpus = make_wsj0_2mix(tmp_path / "wsj")
    out = tmp_path / "run"
    _run("static.yaml", out, corpus="wsj0-2mix", data_folder=corpus, test_conditions="[ov100, official]")
    with open(out / "test_summary.csv") as fin:
        reader = csv.DictReader(fin)
        columns, summary = reader.fieldnames, list(reader)
    assert columns.index("sdri") == columns.index("si_sdri") + 1
    by_condition = {r["condition"]: r for r in summary}
    assert set(by_condition) == {"ov100", "official", "all"}
    # `all` averages the overlap conditions only: the released set is reported on its own
    assert by_condition["all"]["count"] == by_condition["ov100"]["count"]
    assert all(r["sdri"] not in ("", "nan") for r in summary)
    with open(out / "test_results.csv") as fin:
        results = list(csv.DictReader(fin))
    official = [r for r in results if r["condition"] == "official"]
    assert official and all(r["sdr"] and r["sdri"] for r in official)
    assert {r["ID"] for r in official} <= {p.stem for p in (corpus / "2speakers/wav8k/min/tt/mix").glob("*.wav")}


def _separate_with_inference_folder(out, tmp_path, mix_file):
    from speechbrain_dsn.inference import DSNSeparation

    separator = DSNSeparation.from_hparams(source=str(out / "inference"), savedir=str(tmp_path / "pretrained"))
    return separator.separate_file(str(mix_file))


def _results(out):
    with open(out / "test_results.csv") as fin:
        results = list(csv.DictReader(fin))
    with open(out / "utilization_by_segment.csv") as fin:
        shares = list(csv.DictReader(fin))
    return results, shares


def test_three_speakers_by_configuration(tmp_path):
    out = tmp_path / "run"
    _run(
        "dsn_small.yaml",
        out,
        num_spks=3,
        num_train=3,
        num_valid=1,
        num_test=1,
        test_overlaps="[1.0, 0.5]",
        test_conditions="[ov100, ov50]",
        n_audio_to_save=1,
    )
    with open(out / "data" / "train.csv") as fin:
        assert "s3_wav" in csv.DictReader(fin).fieldnames
    results, shares = _results(out)
    assert {r["condition"] for r in results} == {"ov100", "ov50"}
    for row in results:  # one score per source
        assert all(row[f"si_sdri_s{i}"] not in ("", "nan") for i in (1, 2, 3)) and "si_sdri_s4" not in row
        mean = np.mean([float(row[f"si_sdri_s{i}"]) for i in (1, 2, 3)])
        assert float(row["si_sdri"]) == pytest.approx(mean, abs=1e-4)
    assert {r["segment_type"] for r in shares} == {"silence", "single", "overlap"}
    audio = out / "audio_results" / "ov100" / "internal"
    assert len(list(audio.glob("*_source*hat.wav"))) == 3
    mix_file = next((out / "data" / "test" / "ov100").glob("*_mix.wav"))
    est = _separate_with_inference_folder(out, tmp_path, mix_file)
    assert est.shape[-1] == 3 and torch.isfinite(est).all()


def test_one_speaker_in_noise_by_configuration(tmp_path):
    from tests.data_layouts import make_noise_folder

    noise = make_noise_folder(tmp_path / "noise")
    out = tmp_path / "run"
    _run(
        "dsn_small.yaml",
        out,
        num_spks=1,
        noise_folder=noise,
        num_train=3,
        num_valid=1,
        num_test=1,
        test_noise_activities="[1.0, 0.5]",
        test_conditions="[na100, na50]",
        n_audio_to_save=1,
    )
    with open(out / "data" / "train.csv") as fin:
        row = next(csv.DictReader(fin))
    assert "noise_wav" in row and "s2_wav" not in row
    results, shares = _results(out)
    assert {r["condition"] for r in results} == {"na100", "na50"}
    for row in results:
        assert row["si_sdri_s1"] not in ("", "nan") and "si_sdri_s2" not in row
        assert float(row["si_sdri"]) == pytest.approx(float(row["si_sdri_s1"]), abs=1e-4)
    assert {r["segment_type"] for r in shares} == {"silence", "single"}  # no overlap with one source
    audio = out / "audio_results" / "na100" / "internal"
    assert [p.name.split("_")[-1] for p in audio.glob("*_source*hat.wav")] == ["source1hat.wav"]
    mix_file = next((out / "data" / "test" / "na100").glob("*_mix.wav"))
    est = _separate_with_inference_folder(out, tmp_path, mix_file)
    assert est.shape[-1] == 1 and torch.isfinite(est).all()
