"""Overlap-controlled mixing of N speakers with optional partial noise (paper Section IV-A).

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
* **N sources** (WSJ0-3mix, Libri3Mix): the sources form a chain, placed in
  order; source k + 1 overlaps the tail of source k's speech by the target
  ratio of the shorter of the two, exactly as source 2 does source 1. The
  overlap of the mixture is the mean of these N - 1 consecutive ratios (for two
  sources the paper's ratio; for one source, speech enhancement, 0). The
  chain spans ``L_1 + sum_k (L_k - overlap * min(L_{k-1}, L_k))`` samples of
  speech (:func:`~speechbrain_dsn.data.onthefly.speech_span`); every source
  starts and ends no earlier than the one before it.
* Gains follow WSJ0-2mix: each source is normalised by its active-speech RMS,
  then each other source is set ``SIR_RANGE_DB`` = [0, 5] dB (drawn per
  source) below source 1, and the levels are centred on their mean (for two
  sources: s1 at +SIR/2, s2 at -SIR/2 dB). ``Mixture.sir_db`` is the realised
  SIR of source 1 over the mean power of the others.
* Noise is placed as one segment of ``round(activity * len(mix))`` samples at
  a uniformly random position (zero elsewhere, 10 ms raised-cosine edges), at a
  signal-to-noise ratio drawn from ``SNR_RANGE_DB`` = [-6, 3] dB, measured
  between the speech mixture over its active region and the noise over its
  active segment (the WHAM! range, there relative to the louder speaker).
* Finally everything is scaled by one factor so that no signal peaks above
  ``max_amplitude``; the sources are scaled too, so ``mix == sum(sources) + noise``.
"""

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from speechbrain_dsn.data.vad import speech_boundaries

SIR_RANGE_DB = (0.0, 5.0)
SNR_RANGE_DB = (-6.0, 3.0)
SPEECH_LEVEL = 10 ** (-25 / 20)  # active RMS of a normalised source (-25 dBFS)
NOISE_RAMP_S = 0.01

Bounds = Tuple[int, int]
_SOURCE_ATTRIBUTE = re.compile(r"s(\d+)(_bounds|_active)?")


@dataclass
class Mixture:
    """A placed mixture of N sources; every signal has the mixture's length ``[time]``.

    ``m.s1``, ``m.s2_bounds``, ``m.s3_active``... name the entries of
    ``sources``, ``bounds`` and ``active`` (1-based, as in the CSV columns).
    """

    mix: np.ndarray
    sources: List[np.ndarray]
    noise: Optional[np.ndarray]  # None when no noise was added
    overlap: float  # realised overlap ratio (mean over consecutive sources; 0 for one source)
    target_overlap: float
    bounds: List[Bounds]  # speech boundaries of each placed source, in mixture samples
    sir_db: Optional[float]  # realised SIR of s1 over the mean power of the others (None: one source)
    noise_activity: float = 0.0  # realised fraction of the mixture holding noise
    snr_db: Optional[float] = None
    active: Optional[List[np.ndarray]] = None  # placed per-sample VAD labels, when given

    def __getattr__(self, name):
        match = _SOURCE_ATTRIBUTE.fullmatch(name)
        if match is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        index, kind = int(match.group(1)) - 1, match.group(2)
        values = {None: "sources", "_bounds": "bounds", "_active": "active"}[kind]
        values = self.__dict__.get(values)
        if values is None and kind == "_active":
            return None
        if values is None or not 0 <= index < len(values):
            raise AttributeError(f"mixture of {len(self.__dict__.get('sources', []))} sources has no {name}")
        return values[index]


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


def relative_levels_db(num: int, sir_db, rng: np.random.Generator) -> np.ndarray:
    """Level of each normalised source in dB: the others ``sir_db`` below s1, centred on the mean.

    ``sir_db`` (N - 1 values, or one float for two sources) is drawn from
    ``SIR_RANGE_DB`` when None.

    Example
    -------
    >>> relative_levels_db(2, 4.0, None), relative_levels_db(3, [3.0, 6.0], None)
    (array([ 2., -2.]), array([ 3.,  0., -3.]))
    """
    if num == 1:
        return np.zeros(1)
    if sir_db is None:
        sir_db = rng.uniform(*SIR_RANGE_DB, size=num - 1)
    sir_db = np.atleast_1d(np.asarray(sir_db, dtype=np.float64))
    if len(sir_db) != num - 1:
        raise ValueError(f"expected {num - 1} SIRs (s1 over each other source), got {len(sir_db)}")
    levels = np.concatenate([[0.0], -sir_db])
    return levels - levels.mean()


def _place_chain(bounds: Sequence[Bounds], lengths: Sequence[int], overlap: float) -> List[int]:
    """Start of each source in the mixture: each overlaps the one before by ``overlap``."""
    starts = [0]
    for k in range(1, len(bounds)):
        starts.append(starts[-1] + overlap_offset(bounds[k - 1], bounds[k], overlap))
    shift = -min(starts)  # a long leading silence may put a source before the first one
    return [start + shift for start in starts]


def chain_overlap(bounds: Sequence[Bounds]) -> float:
    """Mean overlap ratio of consecutive sources (0 for a single source).

    Example
    -------
    >>> chain_overlap([(0, 100), (50, 250), (150, 250)]), chain_overlap([(0, 100)])
    (0.75, 0.0)
    """
    ratios = [interval_overlap(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    return float(np.mean(ratios)) if ratios else 0.0


def speech_sir_db(signals: Sequence[np.ndarray], bounds: Sequence[Bounds]) -> Optional[float]:
    """Active-speech SIR (dB) of the first source over the mean power of the others (None: one source).

    Example
    -------
    >>> x = np.ones(10)
    >>> round(speech_sir_db([2 * x, x], [(0, 10), (0, 10)]), 2), speech_sir_db([x], [(0, 10)])
    (6.02, None)
    """
    if len(signals) < 2:
        return None
    rms = [max(active_rms(x, b), 1e-12) for x, b in zip(signals, bounds)]
    others = np.sqrt(np.mean(np.square(rms[1:])))
    return float(20 * np.log10(rms[0] / others))


def mix_utterances(
    sources: Sequence[np.ndarray],
    sample_rate: int,
    overlap: float,
    bounds: Optional[Sequence[Optional[Bounds]]] = None,
    sir_db: Optional[Union[float, Sequence[float]]] = None,
    gains: Optional[Sequence[float]] = None,
    noise: Optional[np.ndarray] = None,
    noise_activity: float = 1.0,
    snr_db: Optional[float] = None,
    rng: Optional[np.random.Generator] = None,
    max_amplitude: float = 0.9,
    measure_overlap: bool = False,
    labels: Optional[Sequence[np.ndarray]] = None,
) -> Mixture:
    """Mix N utterances, chained at a target overlap ratio, with optional partial noise.

    Arguments
    ---------
    sources : sequence of np.ndarray
        Mono source utterances ``[time]`` at ``sample_rate`` (one: speech
        enhancement; give it ``noise``).
    sample_rate : int
        Sampling rate in Hz (used by the VAD and the noise ramps).
    overlap : float
        Target overlap ratio in [0, 1] of each source with the one before it
        (see the module docstring); unused with one source.
    bounds : sequence of tuple of int, optional
        Speech boundaries of each source; computed with the VAD when omitted
        (or ``None`` for a source).
    sir_db : float or sequence of float, optional
        Level of s1 over each other source (N - 1 values) after active-RMS
        normalisation; drawn from ``SIR_RANGE_DB`` when omitted. Ignored when
        ``gains`` is given.
    gains : sequence of float, optional
        Raw linear gains of the sources instead of normalisation + SIR, e.g.
        all 1 to keep the levels of a corpus such as WSJ0-2mix.
    noise : np.ndarray, optional
        Noise recording ``[time]`` (any length); no noise when omitted.
    noise_activity : float
        Fraction of the mixture duration that contains noise, in [0, 1].
    snr_db : float, optional
        SNR of the speech mixture over the noise; drawn from ``SNR_RANGE_DB``
        when omitted.
    rng : np.random.Generator, optional
        Source of randomness (SIRs, SNR, noise excerpt and position).
    max_amplitude : float
        Peak level that no output signal exceeds after the final scaling.
    measure_overlap : bool
        If True, re-measure the speech boundaries of the placed sources with
        the VAD (as done for the test sets); otherwise shift the input ones.
    labels : sequence of np.ndarray, optional
        Per-sample speech labels of each source (see
        :class:`~speechbrain_dsn.data.vad.ActivityCache`), placed like the
        sources into ``Mixture.active``.

    Returns
    -------
    Mixture
        Placed sources, mixture, noise and the realised conditions.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> a, b, c = (rng.standard_normal(n) * 0.1 for n in (800, 400, 600))
    >>> m = mix_utterances([a, b, c], 8000, 0.5, [(0, 800), (0, 400), (0, 600)], rng=rng)
    >>> len(m.mix), m.bounds, m.overlap
    (1400, [(0, 800), (600, 1000), (800, 1400)], 0.5)
    >>> bool(np.array_equal(m.mix, m.sources[0] + m.sources[1] + m.sources[2]))
    True
    """
    rng = np.random.default_rng() if rng is None else rng
    if len(sources) == 0:
        raise ValueError("expected at least one source to mix, got none")
    signals = [np.asarray(x, dtype=np.float64) for x in sources]
    if any(x.ndim != 1 for x in signals):
        raise ValueError(f"expected 1-D sources, got shapes {[x.shape for x in signals]}")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be in [0, 1], got {overlap}")
    bounds = list(bounds) if bounds is not None else [None] * len(signals)
    if len(bounds) != len(signals):
        raise ValueError(f"got {len(bounds)} speech boundaries for {len(signals)} sources")
    bounds = [b if b is not None else speech_boundaries(x, sample_rate) for x, b in zip(signals, bounds)]

    # gains: WSJ0-2mix style active-RMS normalisation + SIRs, or given raw gains
    if gains is None:
        levels = relative_levels_db(len(signals), sir_db, rng)
        gains = [SPEECH_LEVEL / max(active_rms(x, b), 1e-8) * 10 ** (level / 20)
                 for x, b, level in zip(signals, bounds, levels)]
    if len(gains) != len(signals):
        raise ValueError(f"got {len(gains)} gains for {len(signals)} sources")
    signals = [x * g for x, g in zip(signals, gains)]

    # placement: a chain, each source overlapping the tail of the one before
    starts = _place_chain(bounds, [len(x) for x in signals], overlap)
    length = max(start + len(x) for start, x in zip(starts, signals))
    placed = [_place(x, start, length) for x, start in zip(signals, starts)]
    speech = np.sum(placed, axis=0)
    shifted = [(b[0] + start, b[1] + start) for b, start in zip(bounds, starts)]

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
            union = (min(b[0] for b in shifted), max(b[1] for b in shifted))
            noise_rms = max(active_rms(segment, (0, seg_len)), 1e-8)
            segment *= active_rms(speech, union) / noise_rms * 10 ** (-snr / 20)
            pos = int(rng.integers(0, length - seg_len + 1))
            placed_noise[pos : pos + seg_len] = segment
            activity = seg_len / length

    # one common scale so that nothing clips and mix == sum(sources) + noise holds
    everything = placed + ([placed_noise] if placed_noise is not None else [])
    total = np.sum(everything, axis=0)
    peak = max(float(np.max(np.abs(x))) if len(x) else 0.0 for x in everything + [total])
    scale = max_amplitude / peak if peak > max_amplitude else 1.0
    # mix is summed from the float32 sources, so the identity holds bit-exactly
    placed = [(x * scale).astype(np.float32) for x in placed]
    mix = placed[0].copy()
    for x in placed[1:]:
        mix = mix + x
    if placed_noise is not None:
        placed_noise = (placed_noise * scale).astype(np.float32)
        mix = mix + placed_noise

    if measure_overlap:
        shifted = [speech_boundaries(x, sample_rate) for x in placed]
    shifted = [(int(b[0]), int(b[1])) for b in shifted]
    active = None
    if labels is not None:
        active = [_place(np.asarray(lab, dtype=bool), start, length).astype(bool)
                  for lab, start in zip(labels, starts)]
    return Mixture(
        mix=mix,
        sources=placed,
        noise=placed_noise,
        overlap=chain_overlap(shifted),
        target_overlap=float(overlap),
        bounds=shifted,
        sir_db=speech_sir_db(placed, shifted),
        noise_activity=activity,
        snr_db=snr,
        active=active,
    )


def mix_sources(
    s1: np.ndarray,
    s2: np.ndarray,
    sample_rate: int,
    overlap: float,
    bounds1: Optional[Bounds] = None,
    bounds2: Optional[Bounds] = None,
    sir_db: Optional[float] = None,
    gains: Optional[Tuple[float, float]] = None,
    labels: Optional[Tuple[np.ndarray, np.ndarray]] = None,
    **options,
) -> Mixture:
    """Mix two utterances at a target overlap ratio, SIR and noise activity.

    The two-source form of :func:`mix_utterances` (same keyword options:
    ``noise``, ``noise_activity``, ``snr_db``, ``rng``, ``max_amplitude``,
    ``measure_overlap``); ``sir_db`` is the SIR of s1 over s2.

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
    return mix_utterances([s1, s2], sample_rate, overlap, [bounds1, bounds2], sir_db=sir_db, gains=gains,
                          labels=labels, **options)
