"""The bundled pretrained DSN (pretrained/dsn_small) loads and separates real speech.

Its figures on the bundled example are measured by
``benchmarks/pretrained_example.py`` and quoted in the README; this test
keeps them from silently regressing.
"""

import pathlib

import pytest
import soundfile as sf
import torch
from speechbrain.inference.separation import SepformerSeparation

from speechbrain_dsn.inference import DSNSeparation
from speechbrain_dsn.metrics import si_sdr_improvement

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = ROOT / "pretrained" / "dsn_small"
EXAMPLE = MODEL / "example"
# measured 3.87 dB with benchmarks/pretrained_example.py (2026-12-01); a margin for other BLAS builds
MIN_SI_SDRI = 3.0


def _load(path):
    signal, rate = sf.read(str(path), dtype="float32")
    return torch.from_numpy(signal), rate


@pytest.fixture(scope="module")
def example():
    mix, rate = _load(EXAMPLE / "mix.wav")
    targets = torch.stack([_load(EXAMPLE / f"s{k}.wav")[0] for k in (1, 2)], -1)
    return mix, targets, rate


def test_stock_and_dsn_interfaces_load_the_bundle_and_agree(example, tmp_path):
    mix, _, rate = example
    stock = SepformerSeparation.from_hparams(source=str(MODEL), savedir=str(tmp_path / "stock"))
    ours = DSNSeparation.from_hparams(source=str(MODEL), savedir=str(tmp_path / "ours"))
    assert stock.hparams.sample_rate == ours.hparams.sample_rate == rate
    with torch.no_grad():
        a = stock.separate_batch(mix[None])
        b = ours.separate_batch(mix[None])
    assert a.shape == b.shape and a.shape[-1] == 2
    assert torch.allclose(a, b, atol=1e-5)


def test_the_bundle_separates_the_example_and_spends_compute_on_speech(example, tmp_path):
    from speechbrain_dsn.data.vad import speech_activity
    from speechbrain_dsn.segment_types import frame_segment_types

    mix, targets, rate = example
    separator = DSNSeparation.from_hparams(source=str(MODEL), savedir=str(tmp_path / "ours"))
    with torch.no_grad():
        est = separator.separate_batch(mix[None])[0, : len(mix)]
    used = separator.last_utilization[0]
    si_sdri = float(si_sdr_improvement(est, targets, mix)["si_sdri"])
    assert si_sdri > MIN_SI_SDRI, si_sdri
    active = [speech_activity(targets[:, k].numpy(), rate) for k in range(2)]
    frames = frame_segment_types(active, len(used), separator.hparams.kernel_stride, separator.hparams.kernel_size)
    silence, speech = used[frames == 0].mean(), used[frames > 0].mean()
    assert silence < speech, (float(silence), float(speech))
