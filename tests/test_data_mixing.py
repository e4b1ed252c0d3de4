"""Tests for speechbrain_dsn.data.mixing (overlap-controlled mixing, Section IV-A)."""

import numpy as np
import pytest

from speechbrain_dsn.data.mixing import (
    SNR_RANGE_DB,
    active_rms,
    interval_overlap,
    mix_sources,
    mix_utterances,
    overlap_offset,
)
from speechbrain_dsn.data.onthefly import crop_speech_lengths, speech_span
from speechbrain_dsn.data.vad import speech_boundaries
from tests.data_layouts import demo_speech

SR = 8000


@pytest.mark.parametrize("target", [0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("speakers", [("aew", "2033"), ("LJ", "367"), ("3331", "1688")])
def test_realised_overlap_measured_by_vad_matches_target(target, speakers):
    s1 = demo_speech(speakers[0], 0, seconds=4.0)
    s2 = demo_speech(speakers[1], 1, seconds=2.5)
    m = mix_sources(s1, s2, SR, target, rng=np.random.default_rng(0))
    # independent oracle: VAD on the placed, scaled sources
    b1, b2 = speech_boundaries(m.s1, SR), speech_boundaries(m.s2, SR)
    assert interval_overlap(b1, b2) == pytest.approx(target, abs=0.05)
    assert b2[0] >= b1[0]  # source 2 starts later
    assert len(m.mix) == len(m.s1) == len(m.s2)


def test_measure_overlap_flag_reports_vad_boundaries():
    s1, s2 = demo_speech("aew", 0), demo_speech("LJ", 2, seconds=3.0)
    m = mix_sources(s1, s2, SR, 0.5, rng=np.random.default_rng(1), measure_overlap=True)
    assert m.s1_bounds == speech_boundaries(m.s1, SR)
    assert m.s2_bounds == speech_boundaries(m.s2, SR)
    assert m.overlap == interval_overlap(m.s1_bounds, m.s2_bounds)


@pytest.mark.parametrize(
    "bounds1, bounds2, overlap, expected_overlap_len",
    [((100, 1100), (0, 400), 1.0, 400), ((0, 1000), (50, 2050), 0.25, 250), ((0, 500), (0, 500), 0.0, 0)],
)
def test_overlap_offset_closed_form(bounds1, bounds2, overlap, expected_overlap_len):
    offset = overlap_offset(bounds1, bounds2, overlap)
    placed2 = (bounds2[0] + offset, bounds2[1] + offset)
    both = max(0, min(bounds1[1], placed2[1]) - max(bounds1[0], placed2[0]))
    assert both == expected_overlap_len
    assert placed2[1] >= bounds1[1]  # s2's speech covers the tail of s1's speech


def test_negative_offset_shifts_source_one():
    # s2 has a long leading silence: it must start before s1 in the mixture
    s1 = np.ones(100)
    s2 = np.concatenate([np.zeros(300), np.ones(100)])
    m = mix_sources(s1, s2, SR, 1.0, (0, 100), (300, 400), gains=(0.5, 0.5))
    assert m.s1_bounds == m.s2_bounds == (300, 400)
    assert np.flatnonzero(m.s1)[0] == 300 and len(m.mix) == 400


def test_mixture_identity_sir_range_and_no_clipping():
    rng = np.random.default_rng(3)
    sirs = []
    for _ in range(20):
        s1 = rng.standard_normal(rng.integers(3000, 9000))
        s2 = 5.0 * rng.standard_normal(rng.integers(3000, 9000))  # loud: must be rescaled
        m = mix_sources(s1, s2, SR, rng.uniform(0.25, 1.0), (0, len(s1)), (0, len(s2)), rng=rng)
        assert np.array_equal(m.mix, m.s1 + m.s2)
        assert np.max(np.abs(np.stack([m.mix, m.s1, m.s2]))) <= 0.9 + 1e-6
        measured = 20 * np.log10(active_rms(m.s1, m.s1_bounds) / active_rms(m.s2, m.s2_bounds))
        assert measured == pytest.approx(m.sir_db, abs=1e-3)
        sirs.append(measured)
    assert min(sirs) >= -0.01 and max(sirs) <= 5.01
    assert max(sirs) - min(sirs) > 2.0  # SIR is actually drawn, not constant


@pytest.mark.parametrize("activity", [0.0, 0.3, 0.75, 1.0])
def test_noise_activity_and_snr(activity):
    rng = np.random.default_rng(4)
    s1, s2 = demo_speech("aew", 0), demo_speech("2033", 1, seconds=3.0)
    noise = rng.standard_normal(5000)  # shorter than the mixture: gets tiled
    m = mix_sources(s1, s2, SR, 0.5, noise=noise, noise_activity=activity, rng=rng)
    assert np.array_equal(m.mix, m.s1 + m.s2 + m.noise)
    support = np.flatnonzero(m.noise)
    span = support[-1] - support[0] + 1 if len(support) else 0
    assert span == round(activity * len(m.mix))  # one contiguous segment of that length
    assert len(support) == span
    assert m.noise_activity == pytest.approx(activity, abs=1e-3)
    if activity > 0:
        union = (min(m.s1_bounds[0], m.s2_bounds[0]), max(m.s1_bounds[1], m.s2_bounds[1]))
        snr = 20 * np.log10(active_rms(m.s1 + m.s2, union) / active_rms(m.noise, (support[0], support[-1] + 1)))
        assert snr == pytest.approx(m.snr_db, abs=0.05)
        assert SNR_RANGE_DB[0] - 0.05 <= snr <= SNR_RANGE_DB[1] + 0.05


def test_invalid_overlap_raises():
    with pytest.raises(ValueError, match="overlap"):
        mix_sources(np.ones(10), np.ones(10), SR, 1.5, (0, 10), (0, 10))


# --- N sources: 3-speaker separation and 1-speaker enhancement ----------------------------------


def _scale_of(placed, source, start):
    """The gain g with placed[start:start + len(source)] == g * source (None if not a pure scaling)."""
    segment = placed[start : start + len(source)].astype(np.float64)
    g = float(segment @ source / (source @ source))
    return g if np.allclose(segment, g * source, atol=1e-6) else None


@pytest.mark.parametrize("target", [0.25, 0.6, 1.0])
def test_three_source_mixture_is_the_sum_of_its_scaled_sources_at_the_drawn_overlap(target):
    speech = [demo_speech("aew", 0, seconds=3.0), demo_speech("LJ", 1, seconds=2.0), demo_speech("367", 0, seconds=2.5)]
    m = mix_utterances(speech, SR, target, rng=np.random.default_rng(7))
    assert len(m.sources) == len(m.bounds) == 3
    assert np.array_equal(m.mix, m.sources[0] + m.sources[1] + m.sources[2])  # bit-exact sum
    for placed, x in zip(m.sources, speech):
        start = int(np.flatnonzero(placed)[0] - np.flatnonzero(x)[0])
        gain = _scale_of(placed, np.asarray(x, np.float64), start)
        assert gain is not None and gain > 0  # each placed source is its input, shifted and scaled
    # independent oracle: the VAD on the placed sources; each source overlaps the previous one
    measured = [speech_boundaries(x, SR) for x in m.sources]
    for k in range(2):
        assert interval_overlap(measured[k], measured[k + 1]) == pytest.approx(target, abs=0.05)
        assert measured[k + 1][0] >= measured[k][0]  # placed in order
    assert m.overlap == pytest.approx(target, abs=0.05)
    assert np.max(np.abs(np.stack([m.mix, *m.sources]))) <= 0.9 + 1e-6
    # levels: active-RMS normalised, each interferer 0-5 dB below source 1 before centring
    rms = [active_rms(x, b) for x, b in zip(m.sources, m.bounds)]
    for k in (1, 2):
        assert -0.01 <= 20 * np.log10(rms[0] / rms[k]) <= 5.01


def test_three_source_overlap_is_planned_on_the_given_bounds():
    rng = np.random.default_rng(0)
    sources = [0.1 * rng.standard_normal(n) for n in (1000, 400, 800)]
    bounds = [(0, 1000), (0, 400), (100, 700)]
    m = mix_utterances(sources, SR, 0.5, bounds, gains=(1.0, 1.0, 1.0), rng=rng)
    # s2 covers the last 200 samples of s1's speech, s3's speech the last 200 of s2's
    assert m.bounds == [(0, 1000), (800, 1200), (1000, 1600)]
    assert m.overlap == pytest.approx(0.5)
    assert len(m.mix) == 1700  # s3's trailing silence (100 samples) is kept
    assert np.array_equal(m.sources[1][800:1200], sources[1].astype(np.float32))  # unscaled: no clipping


def test_one_source_with_noise_is_speech_plus_noise():
    rng = np.random.default_rng(2)
    speech = demo_speech("aew", 0, seconds=2.0)
    noise = rng.standard_normal(3000)
    m = mix_utterances([speech], SR, 1.0, noise=noise, noise_activity=1.0, snr_db=0.0, rng=rng)
    assert len(m.sources) == 1 and m.overlap == 0.0 and m.sir_db is None
    assert np.array_equal(m.mix, m.sources[0] + m.noise)
    b = m.bounds[0]
    snr = 20 * np.log10(active_rms(m.sources[0], b) / active_rms(m.noise, (0, len(m.noise))))
    assert snr == pytest.approx(0.0, abs=0.05)


def test_two_source_wrapper_is_the_general_mixer():
    a, b = demo_speech("aew", 0, seconds=2.0), demo_speech("LJ", 2, seconds=1.5)
    m2 = mix_sources(a, b, SR, 0.5, rng=np.random.default_rng(3))
    mn = mix_utterances([a, b], SR, 0.5, rng=np.random.default_rng(3))
    assert np.array_equal(m2.mix, mn.mix) and m2.s2_bounds == mn.bounds[1] and m2.sir_db == mn.sir_db


@pytest.mark.parametrize(
    "lengths, overlap",
    [
        ((48000, 56000, 40000), 0.5),
        ((72000, 8000, 30000), 0.25),
        ((9000, 9000, 9000), 1.0),
        ((5000,), 0.5),
        ((80000,), 0.5),
    ],
)
def test_crop_lengths_of_n_sources_fit_the_crop(lengths, overlap):
    crop = 32000
    kept = crop_speech_lengths(lengths, overlap, crop)
    assert len(kept) == len(lengths) and all(0 < k <= n for k, n in zip(kept, lengths))
    assert speech_span(kept, overlap) <= crop
    if speech_span(lengths, overlap) <= crop:
        assert kept == tuple(lengths)
    else:  # the cut sources share one window length, the longest that fits
        cut = {k for k, n in zip(kept, lengths) if k < n}
        assert len(cut) == 1
        window = cut.pop()
        assert all(k == min(n, window) for k, n in zip(kept, lengths))
        assert speech_span([min(n, window + 1) for n in lengths], overlap) > crop
