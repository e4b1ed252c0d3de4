"""Inference folders of format 1 still work after a one-line conversion (issue 10)."""

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_dsn.inference import DSNSeparation

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "pretrained" / "dsn_small"
#: outputs of the bundled model computed with the code before the engine split (format 1):
#: the first second of the estimates of example/mix.wav and the whole utilization track
V1 = ROOT / "tests" / "data" / "dsn_small_example_v1_outputs.npz"


def _check_outputs(separator):
    reference = np.load(V1)
    mix, _ = sf.read(BUNDLE / "example" / "mix.wav", dtype="float32")
    with torch.no_grad():
        for name, u in (("internal", None), ("u0.125", 0.125), ("u1", 1.0)):
            est = separator.separate_batch(torch.from_numpy(mix)[None], utilization=u)
            np.testing.assert_allclose(est[0, :8000].numpy(), reference[name], atol=1e-5, rtol=0)
            np.testing.assert_array_equal(separator.last_utilization[0].numpy(), reference[name + "_util"])


@pytest.fixture()
def legacy_folder(tmp_path):
    """The bundled model as it shipped before: its checkpoints with its format-1 hyperparams.yaml."""
    folder = tmp_path / "dsn_small_v1"
    folder.mkdir()
    for name in ("encoder.ckpt", "masknet.ckpt", "decoder.ckpt"):
        shutil.copy(BUNDLE / name, folder / name)
    shutil.copy(ROOT / "tests" / "data" / "legacy_dsn_small_hyperparams.yaml", folder / "hyperparams.yaml")
    return folder


def test_a_format_1_folder_is_refused_with_the_command_that_converts_it(legacy_folder, tmp_path):
    with pytest.raises(ValueError, match="python -m speechbrain_dsn.convert"):
        DSNSeparation.from_hparams(source=str(legacy_folder), savedir=str(tmp_path / "s"))


def test_the_converter_gives_the_outputs_of_the_old_code(legacy_folder, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "speechbrain_dsn.convert", str(legacy_folder)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "converted to format 2" in done.stdout
    assert (legacy_folder / "hyperparams.v1.yaml").is_file()
    _check_outputs(DSNSeparation.from_hparams(source=str(legacy_folder), savedir=str(tmp_path / "s")))
    again = subprocess.run(
        [sys.executable, "-m", "speechbrain_dsn.convert", str(legacy_folder)], capture_output=True, text=True
    )
    assert again.returncode == 0 and "already format 2" in again.stdout


def test_the_bundled_model_was_re_exported_and_gives_the_outputs_of_the_old_code(tmp_path):
    assert "model_config:" in (BUNDLE / "hyperparams.yaml").read_text()
    _check_outputs(DSNSeparation.from_hparams(source=str(BUNDLE), savedir=str(tmp_path / "s")))


def test_converter_errors_name_the_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "speechbrain_dsn.convert", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 1 and str(tmp_path) in done.stderr and "no hyperparams.yaml" in done.stderr
