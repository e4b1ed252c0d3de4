"""Tests for the prepare_data.py command-line wrapper."""

import pathlib
import subprocess
import sys

from tests.data_layouts import make_folder_corpus

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "prepare_data.py"


def test_cli_prepares_folder_corpus(tmp_path):
    corpus = make_folder_corpus(tmp_path / "corpus")
    save = tmp_path / "save"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--corpus",
        "folder",
        "--data_folder",
        str(corpus),
        "--save_folder",
        str(save),
        "--num_train",
        "3",
        "--num_valid",
        "2",
        "--num_test",
        "1",
        "--test_overlaps",
        "1.0",
        "0.5",
        "--max_source_seconds",
        "2",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in save.glob("*.csv"))
    assert names == ["skipped_files.csv", "test_ov100.csv", "test_ov50.csv", "train.csv", "valid.csv"]
    assert len((save / "train.csv").read_text().strip().splitlines()) == 1 + 3
    assert "test_ov50" in result.stdout


def test_cli_rejects_unknown_corpus(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--corpus",
            "timit",
            "--data_folder",
            str(tmp_path),
            "--save_folder",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "invalid choice" in result.stderr
