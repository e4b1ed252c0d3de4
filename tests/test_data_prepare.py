"""Tests for speechbrain_dsn.data.prepare (CSVs and fixed test conditions, Section IV-A)."""

import csv
import logging

import numpy as np
import pytest
import soundfile as sf

from speechbrain_dsn.data import prepare
from speechbrain_dsn.data.prepare import OPTIONS_FILE, PAIR_FIELDS, TEST_FIELDS, prepare_dsn_data
from speechbrain_dsn.data.vad import speech_boundaries
from tests.data_layouts import make_folder_corpus, make_libri2mix, make_wham_noise, make_wsj0_2mix

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
    messages = {name: [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
                for name, path in bad.items()}
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
    real_write = prepare._write_csv

    def failing_write(path, fields, rows):
        calls.append(path)
        if len(calls) == 3:
            path.write_text("ID,dur")  # half-written
            raise OSError("disk full")
        real_write(path, fields, rows)

    monkeypatch.setattr(prepare, "_write_csv", failing_write)
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
    data_folder = {"root": root, "2speakers": root / "2speakers",
                   "min": root / "2speakers" / "wav8k" / "min"}[level]
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
    prepare_dsn_data(root / "Libri2Mix", save, corpus="libri2mix", libri2mix_noisy=True,
                     test_overlaps=(1.0,), test_noise_activities=(0.5,))
    train = read_csv(save / "train.csv")
    assert len(train) == 2 and "/train-100/s1/" in train[0]["s1_wav"]
    assert train[0]["noise_wav"].endswith("/train-100/noise/" + train[0]["ID"] + ".wav")
    check_test_condition(read_csv(save / "test_ov100_na50.csv"), noisy=True, tolerance=0.15)


def test_wrong_sample_rate_is_a_clear_error(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj", sample_rate=8000, file_rate=16000)
    with pytest.raises(ValueError, match=r"\.wav has a sample rate of 16000 Hz, expected 8000 Hz"):
        prepare_dsn_data(root, tmp_path / "save", corpus="wsj0-2mix")
    assert not list((tmp_path / "save").glob("*.csv"))


@pytest.mark.parametrize("corpus, pattern", [("wsj0-2mix", "2speakers/wav"), ("libri2mix", "Libri2Mix/wav"),
                                             ("folder", "<speaker>/<file>")])
def test_missing_layout_names_expected_layout(tmp_path, corpus, pattern):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=pattern):
        prepare_dsn_data(tmp_path / "empty", tmp_path / "save", corpus=corpus)


def test_skip_prep_and_unknown_corpus(tmp_path):
    assert prepare_dsn_data(tmp_path / "nowhere", tmp_path / "save", skip_prep=True) == {}
    assert not (tmp_path / "save").exists()
    with pytest.raises(ValueError, match="corpus must be one of"):
        prepare_dsn_data(tmp_path, tmp_path / "save", corpus="timit")
