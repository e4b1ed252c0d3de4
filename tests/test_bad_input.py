"""Broken input everywhere a user feeds data: each case is handled, or an error names the file and the problem.

Cases and outcomes (README, "Resuming and robustness"):

* ``prepare_data.py`` / ``prepare_dsn_data``: corrupt, empty, multi-channel,
  NaN/Inf, speechless (silent, or too short to hold 50 ms of speech) source
  files are skipped, logged and listed in ``<save_folder>/skipped_files.csv``;
  other sample rates are resampled; any path (spaces, non-ASCII, commas) works;
  a missing data folder is a one-line error of the command line.
* ``train.py`` data: a CSV lacking columns or holding a non-number is an error
  naming the CSV, the row and the column; a source that is bad at training time
  is an error naming the file; a silent source keeps the loss finite.
* ``DSNSeparation.separate_file``: missing, non-audio, empty, NaN/Inf or too
  short files are errors naming the file; multi-channel files are downmixed,
  other sample rates resampled; a silent file gives silent estimates.
"""

import csv
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_dsn.data.audio import BadAudioError, load_audio
from speechbrain_dsn.data.dataio import DATAIO_DEFAULTS, OnTheFlyMixer, dataio_prep
from speechbrain_dsn.data.prepare import REPORT_FILE, prepare_dsn_data
from tests.data_layouts import demo_speech, make_folder_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"N_encoder_out": 32, "num_layers": 1, "nhead": 4, "d_ffn": 64, "num_dual_blocks": 1, "chunk_size": 20}
SMALL = dict(num_train=24, num_valid=2, num_test=2, max_source_seconds=2.0, test_overlaps=(1.0,))


def _read(path):
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


def _bad_files(spk_dir):
    """Every kind of broken source file, in one speaker folder; returns name -> (path, expected problem)."""
    x = demo_speech("367", 1, 2.0)
    bad = {}
    bad["corrupt"] = spk_dir / "corrupt.wav"
    bad["corrupt"].write_bytes(b"RIFF1234WAVEnot really audio")
    bad["empty"] = spk_dir / "empty.wav"
    sf.write(bad["empty"], np.zeros(0, np.float32), 8000)
    bad["stereo"] = spk_dir / "stereo.wav"
    sf.write(bad["stereo"], np.stack([x, x], 1), 8000)
    with_nan = x.copy()
    with_nan[100:200] = np.nan
    bad["nan"] = spk_dir / "nan.wav"
    sf.write(bad["nan"], with_nan, 8000, subtype="FLOAT")
    with_inf = x.copy()
    with_inf[5] = np.inf
    bad["inf"] = spk_dir / "inf.wav"
    sf.write(bad["inf"], with_inf, 8000, subtype="FLOAT")
    bad["short"] = spk_dir / "short.wav"
    sf.write(bad["short"], x[:80], 8000)
    bad["silent"] = spk_dir / "silent.wav"
    sf.write(bad["silent"], np.zeros(16000, np.float32), 8000)
    problems = {
        "corrupt": "cannot read",
        "empty": "empty",
        "stereo": "2 channels",
        "nan": "NaN",
        "inf": "infinite",
        "short": "no speech",
        "silent": "no speech",
    }
    return {name: (path, problems[name]) for name, path in bad.items()}


def test_prepare_skips_lists_and_logs_every_bad_file(tmp_path, caplog):
    corpus = make_folder_corpus(tmp_path / "corpus")
    bad = _bad_files(corpus / "367")
    # usable files that need care: the only file of its speaker at 44.1 kHz, and odd paths
    (corpus / "cd spk").mkdir()
    sf.write(corpus / "cd spk" / "cd.wav", demo_speech("3331", 1, 2.0, 44100), 44100)
    odd = corpus / "spk ünï, é" / "dir with spaces" / "é è, x.wav"
    odd.parent.mkdir(parents=True)
    sf.write(odd, demo_speech("2033", 1, 2.0), 8000)
    save = tmp_path / "save"
    with caplog.at_level(logging.WARNING):
        prepare_dsn_data(corpus, save, **SMALL)

    report = {row["file"]: row["problem"] for row in _read(save / REPORT_FILE)}
    assert sorted(report) == sorted(str(path) for path, _ in bad.values())
    for name, (path, problem) in bad.items():
        assert problem in report[str(path)], (name, report[str(path)])
        assert any(str(path) in r.getMessage() and problem in r.getMessage() for r in caplog.records), name
    assert any(REPORT_FILE in r.getMessage() and "skipped 7 " in r.getMessage() for r in caplog.records)

    rows = {name: _read(save / f"{name}.csv") for name in ("train", "valid", "test_ov100")}
    sources = {r[k] for name in ("train", "valid") for r in rows[name] for k in ("s1_wav", "s2_wav")}
    assert not sources & {str(p) for p, _ in bad.values()}
    speakers = {r[k] for table in rows.values() for r in table for k in ("s1_spk", "s2_spk")}
    assert {"cd spk", "spk ünï, é"} <= speakers  # resampled and odd-path files are used
    for path in sources:
        assert np.isfinite(load_audio(path, 8000)).all()


def test_prepare_with_no_usable_file_names_the_report(tmp_path):
    corpus = tmp_path / "corpus"
    for spk in "abcdef":
        (corpus / spk).mkdir(parents=True)
        sf.write(corpus / spk / "silent.wav", np.zeros(8000, np.float32), 8000)
    with pytest.raises(ValueError, match=rf"need at least 6 speakers.*{REPORT_FILE}"):
        prepare_dsn_data(corpus, tmp_path / "save", **SMALL)
    assert len(_read(tmp_path / "save" / REPORT_FILE)) == 6


def test_prepare_cli_errors_are_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "prepare_data.py",
            "--corpus",
            "folder",
            "--data_folder",
            str(tmp_path / "nowhere"),
            "--save_folder",
            str(tmp_path / "save"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: data folder {tmp_path / 'nowhere'} does not exist" in result.stderr


def test_load_audio_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav", 8000)
    path = tmp_path / "x.wav"
    sf.write(path, np.array([0.1, np.nan, -np.inf, 0.2], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(BadAudioError, match=r"x\.wav has 2 NaN or infinite samples"):
        load_audio(path, 8000)
    sf.write(path, np.ones((4, 2), np.float32) * [0.25, 0.5], 8000, subtype="FLOAT")
    assert np.array_equal(load_audio(path, 8000, downmix=True), np.full(4, 0.375, np.float32))


# ---------------------------------------------------------------------------- train.py data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    save = root / "save"
    prepare_dsn_data(
        make_folder_corpus(root / "corpus"),
        save,
        num_train=2,
        num_valid=1,
        num_test=1,
        max_source_seconds=2.0,
        test_overlaps=(1.0,),
    )
    return save


def _rewrite(src, dst, drop=(), change=None):
    rows = _read(src)
    fields = [f for f in rows[0] if f not in drop]
    with open(dst, "w", newline="") as fout:
        writer = csv.DictWriter(fout, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for i, row in enumerate(rows):
            if change and i == 0:
                row.update(change)
            writer.writerow(row)


@pytest.mark.parametrize(
    "csv_name, drop",
    [("train.csv", ("s2_wav", "s1_gain")), ("valid.csv", ("duration",)), ("test_ov100.csv", ("overlap",))],
)
def test_csv_missing_columns_is_an_error_naming_csv_and_columns(prepared, tmp_path, csv_name, drop):
    save = tmp_path / "save"
    save.mkdir()
    for name in ("train.csv", "valid.csv", "test_ov100.csv"):
        _rewrite(prepared / name, save / name, drop=drop if name == csv_name else ())
    with pytest.raises(ValueError) as err:
        dataio_prep(dict(DATAIO_DEFAULTS, save_folder=str(save), sample_rate=8000))
    message = str(err.value)
    assert str(save / csv_name) in message and all(column in message for column in drop)


def test_csv_non_number_is_an_error_naming_row_and_column(prepared, tmp_path):
    save = tmp_path / "save"
    save.mkdir()
    for name in ("train.csv", "valid.csv", "test_ov100.csv"):
        _rewrite(prepared / name, save / name, change={"s1_start": "abc"} if name == "train.csv" else None)
    with pytest.raises(ValueError, match=r"train\.csv.*row 1.*s1_start.*'abc'"):
        dataio_prep(dict(DATAIO_DEFAULTS, save_folder=str(save), sample_rate=8000))


def test_a_source_broken_after_preparation_is_an_error_naming_it(prepared, tmp_path):
    row = _read(prepared / "train.csv")[0]
    x = load_audio(row["s1_wav"], 8000)
    x[10] = np.nan
    broken = tmp_path / "broken source.wav"
    sf.write(broken, x, 8000, subtype="FLOAT")
    row["s1_wav"] = str(broken)
    with pytest.raises(BadAudioError, match=r"broken source\.wav has 1 NaN"):
        OnTheFlyMixer(8000, segment_len=8000).mix(row, np.random.default_rng(0))


@pytest.mark.parametrize("silent", ["s2", "both"])
def test_a_silent_source_keeps_loss_and_gradients_finite(silent):
    import speechbrain as sb

    from speechbrain_dsn.brain import DSNBrain
    from tests.conftest import BRAIN_HPARAMS, MICRO_MODEL, tiny_model

    torch.manual_seed(0)
    model = tiny_model([0.5, 1.0], **MICRO_MODEL)
    modules = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
    brain = DSNBrain(modules, hparams=dict(BRAIN_HPARAMS, gating_dropout=0.0))
    s1, s2 = 0.1 * torch.randn(2, 4000), torch.zeros(2, 4000)
    if silent == "both":
        s1 = torch.zeros(2, 4000)
    batch = sb.dataio.batch.PaddedBatch([{"mix_sig": a + b, "s1_sig": a, "s2_sig": b} for a, b in zip(s1, s2)])
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    loss = brain.compute_objectives(brain.compute_forward(batch, sb.Stage.TRAIN), batch, sb.Stage.TRAIN)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in brain.modules.parameters() if p.grad is not None)


# ---------------------------------------------------------------------------- DSNSeparation


@pytest.fixture(scope="module")
def separator(tmp_path_factory):
    from speechbrain_dsn.inference import DSNSeparation, export_inference_folder
    from speechbrain_dsn.recipe import load_hparams

    root = tmp_path_factory.mktemp("separator")
    hp = load_hparams(os.path.join(ROOT, "hparams", "dsn_2level.yaml"), {**TINY, "output_folder": str(root / "run")})
    folder = export_inference_folder(hp["model"].get_config(), hp["modules"], str(root / "inference"), 8000)
    return DSNSeparation.from_hparams(source=folder, savedir=str(root / "pretrained"))


@pytest.mark.parametrize(
    "case, error, pattern",
    [
        ("missing", FileNotFoundError, "no such file"),
        ("text", BadAudioError, "cannot read"),
        ("empty", BadAudioError, "empty"),
        ("nan", BadAudioError, "NaN or infinite"),
        ("short", ValueError, "too short"),
    ],
)
def test_separate_file_errors_name_the_file_and_the_problem(separator, tmp_path, case, error, pattern):
    path = tmp_path / f"in put ü {case}.wav"
    if case == "text":
        path.write_text("not audio")
    elif case == "empty":
        sf.write(path, np.zeros(0, np.float32), 8000)
    elif case == "nan":
        sf.write(path, np.array([0.1] * 800 + [np.nan], np.float32), 8000, subtype="FLOAT")
    elif case == "short":
        sf.write(path, np.full(10, 0.1, np.float32), 8000)
    with pytest.raises(error) as err:
        separator.separate_file(str(path))
    assert str(path) in str(err.value) and pattern in str(err.value)


def test_separate_file_downmixes_resamples_and_handles_odd_paths_and_silence(separator, tmp_path):
    mono = np.concatenate([demo_speech("367", 0, 1.0), np.zeros(800, np.float32)]) + 0.5 * demo_speech("LJ", 0, 1.1)
    folder = tmp_path / "dir with spaces ü"
    folder.mkdir()
    sf.write(folder / "mono é.wav", mono, 8000, subtype="FLOAT")
    sf.write(folder / "stereo.wav", np.stack([mono, mono], 1), 8000, subtype="FLOAT")
    expected = separator.separate_file(str(folder / "mono é.wav"))
    assert expected.shape == (1, len(mono), 2) and torch.isfinite(expected).all()
    assert torch.allclose(separator.separate_file(str(folder / "stereo.wav")), expected, atol=1e-6)
    wide = torch.from_numpy(mono)
    import torchaudio

    sf.write(folder / "16k.wav", torchaudio.functional.resample(wide, 8000, 16000).numpy(), 16000, subtype="FLOAT")
    assert separator.separate_file(str(folder / "16k.wav")).shape == (1, len(mono), 2)
    sf.write(folder / "silent.wav", np.zeros(8000, np.float32), 8000)
    silent = separator.separate_file(str(folder / "silent.wav"))
    assert torch.isfinite(silent).all()
