"""Tests for speechbrain_dsn.data.mixing (overlap-controlled mixing, Section IV-A)."""

import numpy as np
import pytest

from tests.data_layouts import demo_speech
from speechbrain_dsn.data.mixing import (
    SNR_RANGE_DB,
    active_rms,
    interval_overlap,
    mix_sources,
    overlap_offset,
)
from speechbrain_dsn.data.vad import speech_boundaries

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
