"""Overlap-controlled two-speaker mixing with optional partial noise (paper Section IV-A).

The paper builds partially overlapping mixtures "by temporally offsetting the
start time of one speaker's signal relative to that of the other", with the
overlap ratio defined as

    overlap = duration when both speakers are active
              / effective (VAD-bounded) duration of the shorter utterance,

and adds WHAM! noise that is "present only during a fraction of the total
mixture duration" (the *noise activity*). Training draws the overlap uniformly
from [0.25, 1.0] and the noise activity from [0, 1] (Section IV-C).

Conventions used here:

* Speech activity of an utterance is the interval ``[start, end)`` between its
  first and last speech sample (:func:`~speechbrain_dsn.data.vad.speech_boundaries`),
  so "both active" is the intersection of the two intervals.
* Source 2 starts later: its speech overlaps the tail of source 1's speech.
  With overlap 1.0 the shorter speech interval lies inside the longer one.
* Gains follow WSJ0-2mix: each source is normalised by its active-speech RMS,
  then the signal-to-interference ratio (s1 over s2) is drawn from
  ``SIR_RANGE_DB`` = [0, 5] dB.
* Noise is placed as one segment of ``round(activity * len(mix))`` samples at
  a uniformly random position (zero elsewhere, 10 ms raised-cosine edges), at a
  signal-to-noise ratio drawn from ``SNR_RANGE_DB`` = [-6, 3] dB, measured
  between the speech mixture over its active region and the noise over its
  active segment (the WHAM! range, there relative to the louder speaker).
* Finally everything is scaled by one factor so that no signal peaks above
  ``max_amplitude``; the sources are scaled too, so ``mix == s1 + s2 + noise``.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from speechbrain_dsn.data.vad import speech_boundaries

SIR_RANGE_DB = (0.0, 5.0)
SNR_RANGE_DB = (-6.0, 3.0)
SPEECH_LEVEL = 10 ** (-25 / 20)  # active RMS of a normalised source (-25 dBFS)
NOISE_RAMP_S = 0.01

Bounds = Tuple[int, int]


@dataclass
class Mixture:
    """A placed two-speaker mixture; every signal has the mixture's length ``[time]``."""

    mix: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    noise: Optional[np.ndarray]  # None when no noise was added
    overlap: float  # realised overlap ratio
    target_overlap: float
    s1_bounds: Bounds  # speech boundaries of the placed s1, in mixture samples
    s2_bounds: Bounds
    sir_db: float  # realised active-speech SIR of s1 over s2
    noise_activity: float = 0.0  # realised fraction of the mixture holding noise
    snr_db: Optional[float] = None
    s1_active: Optional[np.ndarray] = None  # placed per-sample VAD labels, when given
    s2_active: Optional[np.ndarray] = None


def active_rms(signal: np.ndarray, bounds: Bounds) -> float:
    """RMS of ``signal`` inside its speech boundaries ``[start, end)``.

    Example
    -------
    >>> round(active_rms(np.array([0.0, 2.0, -2.0, 0.0]), (1, 3)), 3)
    2.0
    """
    segment = np.asarray(signal[bounds[0] : bounds[1]], dtype=np.float64)
    return float(np.sqrt(np.mean(segment**2))) if len(segment) else 0.0


def interval_overlap(bounds1: Bounds, bounds2: Bounds) -> float:
    """Overlap ratio of two speech intervals: intersection / shorter duration.

    Example
    -------
    >>> interval_overlap((0, 100), (50, 250))
    0.5
    >>> interval_overlap((0, 100), (100, 200))
    0.0
    """
    shorter = min(bounds1[1] - bounds1[0], bounds2[1] - bounds2[0])
    both = min(bounds1[1], bounds2[1]) - max(bounds1[0], bounds2[0])
    return max(both, 0) / shorter if shorter > 0 else 0.0


def overlap_offset(bounds1: Bounds, bounds2: Bounds, overlap: float) -> int:
    """Start of source 2 relative to the start of source 1 for a target overlap.

    Arguments
    ---------
    bounds1, bounds2 : tuple of int
        Speech boundaries ``(start, end)`` of each source in its own samples.
    overlap : float
        Target overlap ratio in [0, 1].

    Returns
    -------
    int
        Offset in samples (may be negative when source 2 has a long leading
        silence); source 2's speech then overlaps the last
        ``round(overlap * shorter)`` samples of source 1's speech.

    Example
    -------
    >>> overlap_offset((0, 100), (0, 200), 0.5)  # s2 speech starts at 50
    50
    >>> b2 = (20, 80)
    >>> off = overlap_offset((0, 100), b2, 1.0)
    >>> interval_overlap((0, 100), (b2[0] + off, b2[1] + off))
    1.0
    """
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be in [0, 1], got {overlap}")
    shorter = min(bounds1[1] - bounds1[0], bounds2[1] - bounds2[0])
    overlap_len = int(round(overlap * shorter))
    return int(bounds1[1] - overlap_len - bounds2[0])


def crop_speech_lengths(len1: int, len2: int, overlap: float, crop: int) -> Tuple[int, int]:
    """Speech lengths to keep of two utterances so that their mixture fits a crop.

    Two utterances with ``len1`` and ``len2`` samples of speech, mixed at
    ``overlap`` (of the shorter one), span ``len1 + len2 - overlap *
    min(len1, len2)`` samples. When that exceeds ``crop``, a crop cut from
    the mixture would lose a speaker or change the overlap. Instead, each
    utterance is shortened to a window of the returned length, as equal as
    the utterances allow, so that the mixture of the windows at the *same*
    overlap spans at most ``crop`` samples.

    Example
    -------
    >>> crop_speech_lengths(48000, 56000, 0.5, 32000)  # two long utterances: equal windows
    (21333, 21333)
    >>> crop_speech_lengths(72000, 16000, 0.25, 32000)  # a short one is kept whole
    (20000, 16000)
    >>> crop_speech_lengths(8000, 12000, 1.0, 32000)  # fits already
    (8000, 12000)
    """
    if len1 + len2 - overlap * min(len1, len2) <= crop:
        return len1, len2
    equal = int(crop / (2.0 - overlap))
    if len1 >= equal and len2 >= equal:
        return equal, equal
    if len1 < equal:
        return len1, min(len2, int(crop - (1.0 - overlap) * len1))
    return min(len1, int(crop - (1.0 - overlap) * len2)), len2


def _place(signal: np.ndarray, start: int, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.float64)
    out[start : start + len(signal)] = signal
    return out


def _noise_segment(
    noise: np.ndarray, length: int, rng: np.random.Generator
) -> np.ndarray:
    """A random excerpt of ``noise`` of ``length`` samples (tiled if too short)."""
    if len(noise) < length:
        noise = np.tile(noise, -(-length // len(noise)))
    start = int(rng.integers(0, len(noise) - length + 1))
    return np.asarray(noise[start : start + length], dtype=np.float64)


def mix_sources(
    s1: np.ndarray,
    s2: np.ndarray,
    sample_rate: int,
    overlap: float,
    bounds1: Optional[Bounds] = None,
    bounds2: Optional[Bounds] = None,
    sir_db: Optional[float] = None,
    gains: Optional[Tuple[float, float]] = None,
    noise: Optional[np.ndarray] = None,
    noise_activity: float = 1.0,
    snr_db: Optional[float] = None,
    rng: Optional[np.random.Generator] = None,
    max_amplitude: float = 0.9,
    measure_overlap: bool = False,
    labels: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> Mixture:
    """Mix two utterances at a target overlap ratio, SIR and noise activity.

    Arguments
    ---------
    s1, s2 : np.ndarray
        Mono source utterances ``[time]`` at ``sample_rate``.
    sample_rate : int
        Sampling rate in Hz (used by the VAD and the noise ramps).
    overlap : float
        Target overlap ratio in [0, 1] (see module docstring).
    bounds1, bounds2 : tuple of int, optional
        Speech boundaries of each source; computed with the VAD when omitted.
    sir_db : float, optional
        SIR of s1 over s2 after active-RMS normalisation; drawn from
        ``SIR_RANGE_DB`` when omitted. Ignored when ``gains`` is given.
    gains : tuple of float, optional
        Raw linear gains for (s1, s2) instead of normalisation + SIR, e.g.
        ``(1, 1)`` to keep the levels of a corpus such as WSJ0-2mix.
    noise : np.ndarray, optional
        Noise recording ``[time]`` (any length); no noise when omitted.
    noise_activity : float
        Fraction of the mixture duration that contains noise, in [0, 1].
    snr_db : float, optional
        SNR of the speech mixture over the noise; drawn from ``SNR_RANGE_DB``
        when omitted.
    rng : np.random.Generator, optional
        Source of randomness (SIR, SNR, noise excerpt and position).
    max_amplitude : float
        Peak level that no output signal exceeds after the final scaling.
    measure_overlap : bool
        If True, re-measure the speech boundaries of the placed sources with
        the VAD (as done for the test sets); otherwise shift the input ones.
    labels : tuple of np.ndarray, optional
        Per-sample speech labels of (s1, s2) (see
        :class:`~speechbrain_dsn.data.vad.ActivityCache`), placed like the
        sources into ``Mixture.s1_active`` / ``s2_active``.

    Returns
    -------
    Mixture
        Placed sources, mixture, noise and the realised conditions.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.standard_normal(800) * 0.1, rng.standard_normal(400) * 0.1
    >>> m = mix_sources(a, b, 8000, 0.5, (0, 800), (0, 400), rng=rng)
    >>> len(m.mix), m.s2_bounds, m.overlap
    (1000, (600, 1000), 0.5)
    >>> bool(np.array_equal(m.mix, m.s1 + m.s2)), 0.0 <= m.sir_db <= 5.0
    (True, True)
    """
    rng = np.random.default_rng() if rng is None else rng
    s1 = np.asarray(s1, dtype=np.float64)
    s2 = np.asarray(s2, dtype=np.float64)
    if s1.ndim != 1 or s2.ndim != 1:
        raise ValueError(f"expected 1-D sources, got {s1.shape} and {s2.shape}")
    if bounds1 is None:
        bounds1 = speech_boundaries(s1, sample_rate)
    if bounds2 is None:
        bounds2 = speech_boundaries(s2, sample_rate)

    # gains: WSJ0-2mix style active-RMS normalisation + SIR, or given raw gains
    if gains is None:
        if sir_db is None:
            sir_db = float(rng.uniform(*SIR_RANGE_DB))
        norm1 = SPEECH_LEVEL / max(active_rms(s1, bounds1), 1e-8)
        norm2 = SPEECH_LEVEL / max(active_rms(s2, bounds2), 1e-8)
        gains = (norm1 * 10 ** (sir_db / 40), norm2 * 10 ** (-sir_db / 40))
    s1, s2 = s1 * gains[0], s2 * gains[1]

    # placement: s2 starts `offset` samples after s1 (shift both if negative)
    offset = overlap_offset(bounds1, bounds2, overlap)
    start1, start2 = max(-offset, 0), max(offset, 0)
    length = max(start1 + len(s1), start2 + len(s2))
    p1, p2 = _place(s1, start1, length), _place(s2, start2, length)
    speech = p1 + p2

    # noise: one segment covering `noise_activity` of the mixture
    placed_noise, activity, snr = None, 0.0, None
    if noise is not None:
        if not 0.0 <= noise_activity <= 1.0:
            raise ValueError(f"noise_activity must be in [0, 1], got {noise_activity}")
        placed_noise = np.zeros(length)
        seg_len = int(round(noise_activity * length))
        if seg_len > 0 and len(noise) > 0:
            segment = _noise_segment(np.asarray(noise), seg_len, rng)
            ramp_len = min(int(NOISE_RAMP_S * sample_rate), seg_len // 2)
            if ramp_len > 0:
                # sin^2 ramp that never reaches exactly zero inside the segment
                ramp = np.sin(0.5 * np.pi * np.arange(1, ramp_len + 1) / (ramp_len + 1)) ** 2
                segment[:ramp_len] *= ramp
                segment[-ramp_len:] *= ramp[::-1]
            snr = float(rng.uniform(*SNR_RANGE_DB)) if snr_db is None else snr_db
            union = (min(bounds1[0] + start1, bounds2[0] + start2),
                     max(bounds1[1] + start1, bounds2[1] + start2))
            noise_rms = max(active_rms(segment, (0, seg_len)), 1e-8)
            segment *= active_rms(speech, union) / noise_rms * 10 ** (-snr / 20)
            pos = int(rng.integers(0, length - seg_len + 1))
            placed_noise[pos : pos + seg_len] = segment
            activity = seg_len / length

    # one common scale so that nothing clips and mix == s1 + s2 + noise holds
    signals = [p1, p2] + ([placed_noise] if placed_noise is not None else [])
    total = np.sum(signals, axis=0)
    peak = max(float(np.max(np.abs(x))) if len(x) else 0.0 for x in signals + [total])
    scale = max_amplitude / peak if peak > max_amplitude else 1.0
    # mix is summed from the float32 sources, so the identity holds bit-exactly
    p1, p2 = (p1 * scale).astype(np.float32), (p2 * scale).astype(np.float32)
    mix = p1 + p2
    if placed_noise is not None:
        placed_noise = (placed_noise * scale).astype(np.float32)
        mix = mix + placed_noise

    if measure_overlap:
        b1 = speech_boundaries(p1, sample_rate)
        b2 = speech_boundaries(p2, sample_rate)
    else:
        b1 = (bounds1[0] + start1, bounds1[1] + start1)
        b2 = (bounds2[0] + start2, bounds2[1] + start2)
    rms1, rms2 = active_rms(p1, b1), active_rms(p2, b2)
    sir = 20 * np.log10(max(rms1, 1e-12) / max(rms2, 1e-12))
    placed_activity = [None, None]
    if labels is not None:
        for k, (source_labels, start) in enumerate(zip(labels, (start1, start2))):
            placed_activity[k] = _place(np.asarray(source_labels, dtype=bool), start, length).astype(bool)
    return Mixture(
        s1_active=placed_activity[0],
        s2_active=placed_activity[1],
        mix=mix,
        s1=p1,
        s2=p2,
        noise=placed_noise,
        overlap=interval_overlap(b1, b2),
        target_overlap=float(overlap),
        s1_bounds=(int(b1[0]), int(b1[1])),
        s2_bounds=(int(b2[0]), int(b2[1])),
        sir_db=float(sir),
        noise_activity=activity,
        snr_db=snr,
    )
