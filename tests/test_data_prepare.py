"""Tests for speechbrain_dsn.data.prepare (CSVs and fixed test conditions, Section IV-A)."""

import csv
import logging
import pathlib

import numpy as np
import pytest
import soundfile as sf

from speechbrain_dsn.data import prepare, tables
from speechbrain_dsn.data.mixing import interval_overlap
from speechbrain_dsn.data.prepare import NOISE_TEST_FIELDS, OPTIONS_FILE, PAIR_FIELDS, TEST_FIELDS, prepare_dsn_data
from speechbrain_dsn.data.vad import speech_boundaries
from tests.data_layouts import (
    ALL_SPEAKERS,
    make_folder_corpus,
    make_libri2mix,
    make_libri3mix,
    make_noise_folder,
    make_wham_mixtures,
    make_wham_noise,
    make_wsj0_2mix,
    make_wsj0_3mix,
)

SMALL = dict(num_train=4, num_valid=2, num_test=2, max_source_seconds=2.0)
CONDITIONS = ["ov100", "ov75", "ov50", "ov25"]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def folder(tmp_path):
    return make_folder_corpus(tmp_path / "corpus")


def check_test_condition(rows, sample_rate=8000, noisy=False, tolerance=0.1):
    for row in rows:
        mix, sr = sf.read(row["mix_wav"], dtype="float32")
        s1, s2 = sf.read(row["s1_wav"], dtype="float32")[0], sf.read(row["s2_wav"], dtype="float32")[0]
        assert sr == sample_rate and len(mix) == len(s1) == len(s2)
        expected = s1 + s2
        if noisy:
            noise = sf.read(row["noise_wav"], dtype="float32")[0]
            expected = expected + noise
            assert np.count_nonzero(noise) / len(noise) == pytest.approx(float(row["noise_activity"]), abs=0.01)
        assert np.array_equal(mix, expected)  # float WAVs: exact on disk
        assert float(row["overlap"]) == pytest.approx(float(row["target_overlap"]), abs=tolerance)
        assert (int(row["s1_start"]), int(row["s1_end"])) == speech_boundaries(s1, sample_rate)
        assert (int(row["s2_start"]), int(row["s2_end"])) == speech_boundaries(s2, sample_rate)


def test_folder_corpus_outputs(folder, tmp_path):
    save = tmp_path / "save"
    paths = prepare_dsn_data(folder, save, corpus="folder", **SMALL)
    assert sorted(paths) == sorted(["train", "valid"] + [f"test_{c}" for c in CONDITIONS])
    assert not (save / "test_official.csv").exists()  # no released test set for a folder corpus
    train, valid = read_csv(save / "train.csv"), read_csv(save / "valid.csv")
    assert list(train[0]) == PAIR_FIELDS and len(train) == 4 and len(valid) == 2
    for row in train + valid:
        assert row["s1_spk"] != row["s2_spk"]
        x = sf.read(row["s1_wav"])[0]
        assert 0 <= int(row["s1_start"]) < int(row["s1_end"]) <= len(x)
        assert int(row["s1_end"]) - int(row["s1_start"]) <= 2.0 * 8000  # max_source_seconds
    speakers = {}
    for name in ("train", "valid") + tuple(f"test_{c}" for c in CONDITIONS):
        rows = read_csv(save / f"{name}.csv")
        speakers.setdefault(name.split("_")[0], set()).update(r[k] for r in rows for k in ("s1_spk", "s2_spk"))
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    for cond in CONDITIONS:
        rows = read_csv(save / f"test_{cond}.csv")
        assert list(rows[0]) == TEST_FIELDS and len(rows) == 2
        assert all(r["mix_wav"].startswith(str(save / "test" / cond)) for r in rows)
        check_test_condition(rows)


def test_rerun_is_noop_and_changed_options_redo(folder, tmp_path):
    save = tmp_path / "save"
    prepare_dsn_data(folder, save, **SMALL)
    files = sorted(p for p in save.rglob("*") if p.is_file())
    mtimes = [p.stat().st_mtime_ns for p in files]
    prepare_dsn_data(folder, save, **SMALL)
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    prepare_dsn_data(folder, save, **dict(SMALL, num_test=1, test_overlaps=(1.0, 0.5)))
    assert len(read_csv(save / "test_ov100.csv")) == 1
    assert not (save / "test_ov75.csv").exists()  # outputs of the old options are gone
    assert prepare.load_options(save)["sizes"]["test"] == 1


def test_bad_files_are_reported_and_skipped(folder, tmp_path, caplog):
    bad = {
        "corrupt": folder / "367" / "corrupt.wav",
        "empty": folder / "1688" / "empty.wav",
        "stereo": folder / "aew" / "stereo.wav",
        "format": folder / "LJ" / "clip.mp3",
    }
    bad["corrupt"].write_bytes(b"RIFF1234WAVEnot really audio")
    sf.write(bad["empty"], np.zeros(0, dtype=np.float32), 8000)
    sf.write(bad["stereo"], np.zeros((8000, 2), dtype=np.float32), 8000)
    bad["format"].write_bytes(b"\xff\xfb\x90\x00")
    with caplog.at_level(logging.WARNING):
        prepare_dsn_data(folder, tmp_path / "save", **SMALL)
    messages = {
        name: [r.getMessage() for r in caplog.records if str(path) in r.getMessage()] for name, path in bad.items()
    }
    assert any("corrupt" in m for m in messages["corrupt"])
    assert any("empty" in m for m in messages["empty"])
    assert any("2 channels" in m for m in messages["stereo"])
    assert any("unsupported audio format" in m for m in messages["format"])
    used = (tmp_path / "save" / "train.csv").read_text() + (tmp_path / "save" / "valid.csv").read_text()
    assert not any(path.name in used for path in bad.values())


def test_failure_leaves_no_partial_csv_or_marker(folder, tmp_path, monkeypatch):
    save = tmp_path / "save"
    prepare_dsn_data(folder, save, **SMALL)  # a complete earlier run
    calls = []
    real_write = tables.write_csv

    def failing_write(path, fields, rows):
        calls.append(path)
        if len(calls) == 3:
            path.write_text("ID,dur")  # half-written
            raise OSError("disk full")
        real_write(path, fields, rows)

    monkeypatch.setattr(tables, "write_csv", failing_write)
    with pytest.raises(OSError, match="disk full"):
        prepare_dsn_data(folder, save, **dict(SMALL, seed=7))
    assert not list(save.glob("*.csv")) and not list(save.glob("*.tmp"))
    assert not (save / OPTIONS_FILE).exists()
    monkeypatch.undo()
    prepare_dsn_data(folder, save, **dict(SMALL, seed=7))  # recovers
    assert (save / OPTIONS_FILE).exists() and len(read_csv(save / "train.csv")) == 4


@pytest.mark.parametrize("level", ["root", "2speakers", "min"])
def test_wsj0_2mix_layout(tmp_path, level):
    root = make_wsj0_2mix(tmp_path / "wsj")
    data_folder = {"root": root, "2speakers": root / "2speakers", "min": root / "2speakers" / "wav8k" / "min"}[level]
    save = tmp_path / "save"
    prepare_dsn_data(data_folder, save, corpus="wsj0-2mix")
    train = read_csv(save / "train.csv")
    assert len(train) == 2 and {r["s1_gain"] for r in train} == {"1"}  # corpus levels kept
    for row in train:  # WSJ0 speaker = first 3 characters of each utterance id
        assert row["s1_spk"] == row["ID"][:3] and row["s2_spk"] == row["ID"].split("_")[2][:3]
    assert "/tr/s1/" in train[0]["s1_wav"]
    for cond in CONDITIONS:
        check_test_condition(read_csv(save / f"test_{cond}.csv"), tolerance=0.15)


def test_wham_layout(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj")
    make_wham_noise(tmp_path / "wsj" / "wham_noise", root)  # found beside 2speakers
    make_wham_mixtures(tmp_path / "wsj" / "wham", root)  # the released WHAM! test set, found beside too
    save = tmp_path / "save"
    paths = prepare_dsn_data(root, save, corpus="wham", test_noise_activities=(1.0, 0.5))
    assert "test_ov100_na50" in paths and "test_ov25_na100" in paths
    train = read_csv(save / "train.csv")
    assert all("wham_noise/tr/" in r["noise_wav"] for r in train)
    rows = read_csv(save / "test_ov50_na50.csv")
    assert {"noise_wav", "noise_activity", "snr_db"} <= set(rows[0])
    check_test_condition(rows, noisy=True, tolerance=0.15)


def test_libri2mix_layout(tmp_path):
    root = make_libri2mix(tmp_path / "libri")
    save = tmp_path / "save"
    prepare_dsn_data(
        root / "Libri2Mix",
        save,
        corpus="libri2mix",
        libri2mix_noisy=True,
        test_overlaps=(1.0,),
        test_noise_activities=(0.5,),
    )
    train = read_csv(save / "train.csv")
    assert len(train) == 2 and "/train-100/s1/" in train[0]["s1_wav"]
    assert train[0]["noise_wav"].endswith("/train-100/noise/" + train[0]["ID"] + ".wav")
    check_test_condition(read_csv(save / "test_ov100_na50.csv"), noisy=True, tolerance=0.15)


def test_wrong_sample_rate_is_a_clear_error(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj", sample_rate=8000, file_rate=16000)
    with pytest.raises(ValueError, match=r"\.wav has a sample rate of 16000 Hz, expected 8000 Hz"):
        prepare_dsn_data(root, tmp_path / "save", corpus="wsj0-2mix")
    assert not list((tmp_path / "save").glob("*.csv"))


@pytest.mark.parametrize(
    "corpus, pattern", [("wsj0-2mix", "2speakers/wav"), ("libri2mix", "Libri2Mix/wav"), ("folder", "<speaker>/<file>")]
)
def test_missing_layout_names_expected_layout(tmp_path, corpus, pattern):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=pattern):
        prepare_dsn_data(tmp_path / "empty", tmp_path / "save", corpus=corpus)


def test_skip_prep_and_unknown_corpus(tmp_path):
    assert prepare_dsn_data(tmp_path / "nowhere", tmp_path / "save", skip_prep=True) == {}
    assert not (tmp_path / "save").exists()
    with pytest.raises(ValueError, match="corpus must be one of"):
        prepare_dsn_data(tmp_path, tmp_path / "save", corpus="timit")


# --- the official test sets, as released (condition ``official``) ----------------------------


def check_official(rows, folder, mix_sub, noisy=False, sample_rate=8000):
    """Rows point at the released files, untrimmed, with measured boundaries and overlap."""
    assert list(rows[0]) == TEST_FIELDS + (NOISE_TEST_FIELDS if noisy else [])
    names = sorted(p.name for p in (folder / mix_sub).glob("*.wav"))
    assert [r["ID"] + ".wav" for r in rows] == names
    for row in rows:
        name = row["ID"] + ".wav"
        assert row["mix_wav"] == str(folder / mix_sub / name)
        assert row["s1_wav"] == str(folder / "s1" / name) and row["s2_wav"] == str(folder / "s2" / name)
        mix, sr = sf.read(row["mix_wav"], dtype="float32")
        s1, s2 = sf.read(row["s1_wav"], dtype="float32")[0], sf.read(row["s2_wav"], dtype="float32")[0]
        assert sr == sample_rate and float(row["duration"]) == round(len(mix) / sr, 3)  # untrimmed
        b1, b2 = speech_boundaries(s1, sr), speech_boundaries(s2, sr)
        assert (int(row["s1_start"]), int(row["s1_end"])) == b1
        assert (int(row["s2_start"]), int(row["s2_end"])) == b2
        assert float(row["overlap"]) == pytest.approx(interval_overlap(b1, b2), abs=1e-4)
        assert row["target_overlap"] == ""  # a measured, not a planned, overlap
        if noisy:
            assert row["noise_wav"] == str(folder / "noise" / name)
            assert float(row["noise_activity"]) == pytest.approx(1.0, abs=0.01)


def test_official_wsj0_2mix(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj")
    save = tmp_path / "save"
    paths = prepare_dsn_data(root, save, corpus="wsj0-2mix")
    assert paths["test_official"] == save / "test_official.csv"
    assert "test_official.csv" in prepare.load_options(save)["outputs"]
    rows = read_csv(save / "test_official.csv")
    check_official(rows, (root / "2speakers/wav8k/min/tt").resolve(), "mix")
    assert len(rows) == 2 and rows[0]["s1_spk"] == rows[0]["ID"][:3]
    assert not (save / "test" / "official").exists()  # nothing copied


def test_official_respects_num_test_and_rerun_and_opt_out(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj", pairs=3)
    save = tmp_path / "save"
    prepare_dsn_data(root, save, corpus="wsj0-2mix", num_test=2)
    official = read_csv(save / "test_official.csv")
    assert len(official) == 2  # the same subset of mixtures as the rebuilt conditions
    assert [r["ID"] for r in official] == [r["ID"] for r in read_csv(save / "test_ov100.csv")]
    mtime = (save / "test_official.csv").stat().st_mtime_ns
    prepare_dsn_data(root, save, corpus="wsj0-2mix", num_test=2)  # no-op
    assert (save / "test_official.csv").stat().st_mtime_ns == mtime
    paths = prepare_dsn_data(root, save, corpus="wsj0-2mix", num_test=2, official_test=False)
    assert "test_official" not in paths and not (save / "test_official.csv").exists()
    prepare_dsn_data(root, save, corpus="wsj0-2mix", num_test=2)  # asked again: redone
    assert len(read_csv(save / "test_official.csv")) == 2


def test_official_wham_uses_released_mix_both(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj")
    make_wham_noise(tmp_path / "noise", root)
    wham = make_wham_mixtures(tmp_path / "elsewhere" / "my_wham", root)
    save = tmp_path / "save"
    prepare_dsn_data(
        root,
        save,
        corpus="wham",
        noise_folder=tmp_path / "noise",
        wham_folder=wham,
        test_overlaps=(1.0,),
        test_noise_activities=(1.0,),
    )
    rows = read_csv(save / "test_official.csv")
    check_official(rows, (wham / "wav8k/min/tt").resolve(), "mix_both", noisy=True)
    assert all(float(r["snr_db"]) < 30 for r in rows)


def test_official_wham_missing_is_a_clear_error(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj")
    make_wham_noise(tmp_path / "wsj" / "wham_noise", root)
    with pytest.raises(FileNotFoundError, match=r"(?s)WHAM! test mixtures.*mix_both.*wham_folder.*official_test"):
        prepare_dsn_data(root, tmp_path / "save", corpus="wham")
    assert not list((tmp_path / "save").glob("*.csv"))
    prepare_dsn_data(
        root, tmp_path / "save", corpus="wham", official_test=False, test_overlaps=(1.0,), test_noise_activities=(1.0,)
    )
    assert not (tmp_path / "save" / "test_official.csv").exists()


@pytest.mark.parametrize("noisy", [False, True])
def test_official_libri2mix(tmp_path, noisy):
    root = make_libri2mix(tmp_path / "libri")
    save = tmp_path / "save"
    prepare_dsn_data(
        root, save, corpus="libri2mix", libri2mix_noisy=noisy, test_overlaps=(1.0,), test_noise_activities=(1.0,)
    )
    folder = (root / "Libri2Mix/wav8k/min/test").resolve()
    check_official(read_csv(save / "test_official.csv"), folder, "mix_both" if noisy else "mix_clean", noisy=noisy)


def test_official_wrong_rate_and_incomplete_set_are_clear_errors(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj")
    tt = root / "2speakers/wav8k/min/tt"
    mix = sorted((tt / "mix").glob("*.wav"))[0]
    sf.write(mix, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match=rf"{mix.name} has a sample rate of 16000 Hz, expected 8000 Hz"):
        prepare_dsn_data(root, tmp_path / "save", corpus="wsj0-2mix")
    sf.write(mix, np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(ValueError, match=rf"(?s){mix.name}.*800 samples.*s1"):
        prepare_dsn_data(root, tmp_path / "save", corpus="wsj0-2mix")
    (tt / "s2" / mix.name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"official test mixture .*{mix.name} has no s2 reference"):
        prepare_dsn_data(root, tmp_path / "save", corpus="wsj0-2mix", num_train=1)
    assert not list((tmp_path / "save").glob("*.csv"))


# --- 3-speaker layouts and 1-speaker enhancement (num_spks) ----------------------------------


def check_sources_sum(rows, num_spks, noisy=False, tolerance=0.1):
    """Every test mixture is the exact sum of its num_spks sources (+ noise); overlaps as planned."""
    for row in rows:
        mix = sf.read(row["mix_wav"], dtype="float32")[0]
        sources = [sf.read(row[f"s{i}_wav"], dtype="float32")[0] for i in range(1, num_spks + 1)]
        expected = sum(sources[1:], sources[0])
        if noisy:
            expected = expected + sf.read(row["noise_wav"], dtype="float32")[0]
        assert np.array_equal(mix, expected)
        bounds = [speech_boundaries(x, 8000) for x in sources]
        for i, b in enumerate(bounds, 1):
            assert (int(row[f"s{i}_start"]), int(row[f"s{i}_end"])) == b
        assert f"s{num_spks + 1}_wav" not in row
        if num_spks > 1:
            measured = np.mean([interval_overlap(bounds[k], bounds[k + 1]) for k in range(num_spks - 1)])
            assert float(row["overlap"]) == pytest.approx(measured, abs=1e-4)
            assert float(row["overlap"]) == pytest.approx(float(row["target_overlap"]), abs=tolerance)


def test_folder_corpus_with_three_speakers_per_mixture(tmp_path):
    folder = make_folder_corpus(tmp_path / "corpus", speakers=ALL_SPEAKERS)  # >= 3 speakers in every split
    save = tmp_path / "save"
    paths = prepare_dsn_data(folder, save, num_spks=3, **dict(SMALL, test_overlaps=(1.0, 0.5)))
    assert sorted(paths) == ["test_ov100", "test_ov50", "train", "valid"]
    train = read_csv(save / "train.csv")
    assert list(train[0]) == prepare.source_fields(3) and len(train) == 4
    assert list(train[0])[2:5] == ["s1_wav", "s2_wav", "s3_wav"]
    for row in train + read_csv(save / "valid.csv"):
        assert len({row["s1_spk"], row["s2_spk"], row["s3_spk"]}) == 3  # three different speakers
    for cond in ("ov100", "ov50"):
        rows = read_csv(save / f"test_{cond}.csv")
        assert list(rows[0]) == prepare.test_fields(3) and len(rows) == 2
        check_sources_sum(rows, 3)
    assert prepare.load_options(save)["num_spks"] == 3


def test_wsj0_3mix_layout_and_official_test(tmp_path):
    root = make_wsj0_3mix(tmp_path / "wsj")
    save = tmp_path / "save"
    paths = prepare_dsn_data(root, save, corpus="wsj0-3mix", test_overlaps=(1.0,))
    assert sorted(paths) == ["test_official", "test_ov100", "train", "valid"]
    train = read_csv(save / "train.csv")
    assert len(train) == 2 and {r["s3_gain"] for r in train} == {"1"}  # corpus levels kept
    for row in train:  # WSJ0 speaker = first 3 characters of each utterance id
        parts = row["ID"].split("_")
        assert [row[f"s{i}_spk"] for i in (1, 2, 3)] == [parts[0][:3], parts[2][:3], parts[4][:3]]
    assert "/tr/s3/" in train[0]["s3_wav"]
    check_sources_sum(read_csv(save / "test_ov100.csv"), 3, tolerance=0.15)
    official = read_csv(save / "test_official.csv")
    tt = (root / "3speakers/wav8k/min/tt").resolve()
    assert [r["s3_wav"] for r in official] == [str(tt / "s3" / (r["ID"] + ".wav")) for r in official]
    assert all(r["mix_wav"].startswith(str(tt / "mix")) for r in official)


@pytest.mark.parametrize("noisy", [False, True])
def test_libri3mix_layout(tmp_path, noisy):
    root = make_libri3mix(tmp_path / "libri")
    save = tmp_path / "save"
    prepare_dsn_data(
        root, save, corpus="libri3mix", libri2mix_noisy=noisy, test_overlaps=(1.0,), test_noise_activities=(0.5,)
    )
    train = read_csv(save / "train.csv")
    assert len(train) == 2 and "/train-100/s3/" in train[0]["s3_wav"]
    assert ("noise_wav" in train[0]) == noisy
    condition = "ov100_na50" if noisy else "ov100"
    check_sources_sum(read_csv(save / f"test_{condition}.csv"), 3, noisy=noisy, tolerance=0.15)
    official = read_csv(save / "test_official.csv")
    assert official[0]["mix_wav"].endswith(
        ("/test/mix_both/" if noisy else "/test/mix_clean/") + official[0]["ID"] + ".wav"
    )


def test_num_spks_must_match_a_fixed_corpus(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj")
    with pytest.raises(ValueError, match=r"wsj0-2mix.*2 sources.*num_spks is 3.*wsj0-3mix"):
        prepare_dsn_data(root, tmp_path / "save", corpus="wsj0-2mix", num_spks=3)
    with pytest.raises(ValueError, match="num_spks must be"):
        prepare_dsn_data(root, tmp_path / "save", corpus="folder", num_spks=0)


def test_folder_enhancement_needs_noise(folder, tmp_path):
    with pytest.raises(ValueError, match=r"(?s)num_spks=1.*speech enhancement.*noise_folder"):
        prepare_dsn_data(folder, tmp_path / "save", num_spks=1, **SMALL)
    assert not list((tmp_path / "save").glob("*.csv"))


def test_folder_enhancement_one_speaker_in_noise(folder, tmp_path):
    noise = make_noise_folder(tmp_path / "noise")
    save = tmp_path / "save"
    paths = prepare_dsn_data(folder, save, num_spks=1, noise_folder=noise, test_noise_activities=(1.0, 0.5), **SMALL)
    # one source: the conditions are the noise activities only
    assert sorted(paths) == ["test_na100", "test_na50", "train", "valid"]
    train, valid = read_csv(save / "train.csv"), read_csv(save / "valid.csv")
    assert list(train[0]) == prepare.source_fields(1) + ["noise_wav"]
    used_noise = {split: {r["noise_wav"] for r in rows} for split, rows in (("train", train), ("valid", valid))}
    assert all(pathlib.Path(p).parent == noise.resolve() for p in used_noise["train"] | used_noise["valid"])
    rows = read_csv(save / "test_na50.csv")
    assert list(rows[0]) == prepare.test_fields(1) + NOISE_TEST_FIELDS
    check_sources_sum(rows, 1, noisy=True)
    for row in rows:
        assert float(row["overlap"]) == 0.0 and row["sir_db"] == ""
        noise_signal = sf.read(row["noise_wav"], dtype="float32")[0]
        assert np.count_nonzero(noise_signal) / len(noise_signal) == pytest.approx(0.5, abs=0.01)
    assert not used_noise["train"] & used_noise["valid"]  # disjoint parts of the noise folder


def test_folder_noise_with_bad_files_and_too_few_files(folder, tmp_path):
    noise = make_noise_folder(tmp_path / "noise", files=4)
    (noise / "broken.wav").write_bytes(b"RIFF1234WAVEnot really audio")
    save = tmp_path / "save"
    prepare_dsn_data(folder, save, num_spks=1, noise_folder=noise, test_noise_activities=(1.0,), **SMALL)
    report = read_csv(save / prepare.REPORT_FILE)
    assert any(r["file"].endswith("broken.wav") and "cannot read" in r["problem"] for r in report)
    few = make_noise_folder(tmp_path / "few", files=2)
    with pytest.raises(ValueError, match=r"(?s)few.*2 usable noise files.*at least 3"):
        prepare_dsn_data(folder, tmp_path / "save2", num_spks=1, noise_folder=few, **SMALL)
