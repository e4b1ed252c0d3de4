"""Training crops keep both speakers and the sampled overlap (paper Section IV-C).

The recipe samples the overlap ratio of each training mixture from [0.25, 1]
and trains on 4 s crops. A crop cut anywhere in a long mixture can hold one
speaker only (a silent target: SI-SNR -80 dB and no gradient) and its overlap
is not the sampled one. These tests measure the overlap on the crop itself.
"""

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_dsn.data.dataio import OnTheFlyMixer
from speechbrain_dsn.data.mixing import interval_overlap

SR = 8000
SEG = 4 * SR
# the overlap measured on a crop may differ from the sampled one by this much
# (rounding of the placement and of the cut windows, a few samples)
TOLERANCE = 0.01


def _voiced(seconds, f0, rng):
    """Harmonic, syllable-modulated signal without pauses: active at every sample."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    return (0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * x).astype(np.float32)


def _source_file(tmp_path, name, speech_s, f0, rng):
    """A source with 0.5 s of digital silence before and after its speech; returns (path, bounds)."""
    pad = np.zeros(SR // 2, dtype=np.float32)
    path = tmp_path / f"{name}.wav"
    sf.write(path, np.concatenate([pad, _voiced(speech_s, f0, rng), pad]), SR, subtype="FLOAT")
    return str(path), (len(pad), len(pad) + int(speech_s * SR))


def _active_bounds(x):
    nz = np.flatnonzero(np.abs(np.asarray(x)) > 0)
    return (int(nz[0]), int(nz[-1]) + 1) if len(nz) else None


@pytest.mark.parametrize("lengths", [(6.0, 7.0), (9.0, 2.0), (3.0, 3.5), (1.5, 1.0)])
def test_crop_keeps_both_speakers_and_the_sampled_overlap(tmp_path, lengths):
    rng = np.random.default_rng(0)
    (p1, b1), (p2, b2) = (
        _source_file(tmp_path, f"s{i}", s, f0, rng) for i, (s, f0) in enumerate(zip(lengths, (120, 210)))
    )
    row = {
        "s1_wav": p1,
        "s2_wav": p2,
        "s1_start": b1[0],
        "s1_end": b1[1],
        "s2_start": b2[0],
        "s2_end": b2[1],
        "s1_gain": 1.0,
        "s2_gain": 1.0,
    }
    for k, overlap in enumerate(np.linspace(0.25, 1.0, 7)):
        mixer = OnTheFlyMixer(SR, (overlap, overlap), segment_len=SEG)
        for random_crop in (True, False):
            out = mixer.mix(row, np.random.default_rng(k), random_crop=random_crop)
            s1, s2 = out["s1_sig"].numpy(), out["s2_sig"].numpy()
            long_mixture = sum(lengths) - overlap * min(lengths) > SEG / SR
            assert len(s1) == (SEG if long_mixture else len(s1)) and len(s1) <= SEG + SR
            c1, c2 = _active_bounds(s1), _active_bounds(s2)
            assert c1 is not None and c2 is not None, "a speaker is missing from the crop"
            assert interval_overlap(c1, c2) == pytest.approx(overlap, abs=TOLERANCE), (lengths, overlap)


def test_crop_labels_follow_the_audio(tmp_path):
    """The per-sample VAD labels of each source are cut and placed exactly like its audio."""
    from speechbrain_dsn.data.vad import ActivityCache

    rng = np.random.default_rng(1)
    (p1, b1), (p2, b2) = _source_file(tmp_path, "a", 6.0, 130, rng), _source_file(tmp_path, "b", 5.0, 220, rng)
    row = {
        "s1_wav": p1,
        "s2_wav": p2,
        "s1_start": b1[0],
        "s1_end": b1[1],
        "s2_start": b2[0],
        "s2_end": b2[1],
        "s1_gain": 1.0,
        "s2_gain": 1.0,
    }
    mixer = OnTheFlyMixer(SR, (0.5, 0.5), segment_len=SEG, activity=ActivityCache(SR, tmp_path / "vad"))
    out = mixer.mix(row, np.random.default_rng(3))
    for k in ("s1", "s2"):
        labels, audio = out[f"{k}_vad"].numpy(), out[f"{k}_sig"].numpy()
        assert labels.shape == audio.shape and labels.dtype == np.float32
        silent = np.abs(audio) == 0
        assert labels[silent].mean() < 0.05  # digital silence is never speech
        assert labels[~silent].mean() > 0.7  # the voiced signal mostly is


@pytest.mark.parametrize("lengths", [(6.0, 7.0, 5.0), (9.0, 2.0, 3.0), (1.5, 1.0, 1.2)])
def test_crop_of_three_sources_keeps_every_speaker_and_the_sampled_overlap(tmp_path, lengths):
    from speechbrain_dsn.data.vad import ActivityCache

    rng = np.random.default_rng(2)
    files = [_source_file(tmp_path, f"s{i}", s, f0, rng) for i, (s, f0) in enumerate(zip(lengths, (120, 210, 330)))]
    row = {}
    for i, (path, bounds) in enumerate(files, 1):
        row.update({f"s{i}_wav": path, f"s{i}_start": bounds[0], f"s{i}_end": bounds[1], f"s{i}_gain": 1.0})
    for k, overlap in enumerate((0.25, 0.6, 1.0)):
        mixer = OnTheFlyMixer(SR, (overlap, overlap), segment_len=SEG, num_spks=3)
        out = mixer.mix(row, np.random.default_rng(k))
        signals = [out[f"s{i}_sig"].numpy() for i in (1, 2, 3)]
        assert torch.equal(out["mix_sig"], out["s1_sig"] + out["s2_sig"] + out["s3_sig"])
        assert len(signals[0]) <= SEG and out["source_files"] == tuple(path for path, _ in files)
        active = [_active_bounds(x) for x in signals]
        assert all(b is not None for b in active), "a speaker is missing from the crop"
        for i in range(2):  # each source overlaps the one before it by the sampled ratio
            assert interval_overlap(active[i], active[i + 1]) == pytest.approx(overlap, abs=TOLERANCE)
    # the labels of every source are cut and placed like its audio
    labelled = OnTheFlyMixer(
        SR, (0.5, 0.5), segment_len=SEG, activity=ActivityCache(SR, tmp_path / "vad"), num_spks=3
    ).mix(row, np.random.default_rng(5))
    for i in (1, 2, 3):
        labels, audio = labelled[f"s{i}_vad"].numpy(), labelled[f"s{i}_sig"].numpy()
        assert labels.shape == audio.shape and labels[audio == 0].mean() < 0.05 and labels[audio != 0].mean() > 0.7


def test_mixer_rejects_a_row_with_fewer_sources_than_num_spks(tmp_path):
    rng = np.random.default_rng(0)
    (p1, b1), (p2, b2) = (_source_file(tmp_path, f"s{i}", 1.0, 150, rng) for i in (1, 2))
    row = {
        "ID": "pair1",
        "s1_wav": p1,
        "s2_wav": p2,
        "s1_start": b1[0],
        "s1_end": b1[1],
        "s2_start": b2[0],
        "s2_end": b2[1],
        "s1_gain": 1.0,
        "s2_gain": 1.0,
    }
    with pytest.raises(ValueError, match=r"pair1.*s3_wav.*num_spks.*3"):
        OnTheFlyMixer(SR, num_spks=3).mix(row, rng)
