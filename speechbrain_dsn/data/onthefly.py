"""On-the-fly training mixtures of ``num_spks`` sources (paper Sections IV-A, IV-C).

:class:`OnTheFlyMixer` builds one training or validation mixture from a CSV row
of source files (``s1_wav`` ... ``s{num_spks}_wav``, their speech boundaries and
gains, and ``noise_wav`` with noise), or, with dynamic mixing, from
``num_spks`` utterances of different speakers drawn from the training pool.
Each draw samples the overlap ratio and the noise activity, mixes the sources
with :func:`~speechbrain_dsn.data.mixing.mix_utterances` and crops the result.

A crop keeps every speaker and the sampled overlap: when the utterances mixed
at that overlap would span more than the crop, each is first cut to a random
window of its speech (:func:`crop_speech_lengths`),
and the windows are mixed at the sampled overlap. Items also carry the
per-sample webrtcvad labels of every placed source (``s{i}_vad``), cut and
placed like the audio, for the eq. 20 weighting.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchaudio

from speechbrain_dsn.data.audio import load_audio, speech_region
from speechbrain_dsn.data.mixing import mix_utterances
from speechbrain_dsn.data.vad import ActivityCache

SPEED_FACTORS = (0.95, 1.0, 1.05)


def speech_span(lengths: Sequence[int], overlap: float) -> float:
    """Samples spanned by the speech of sources chained at ``overlap`` (module docstring).

    Example
    -------
    >>> speech_span([800, 400], 0.5), speech_span([1000, 400, 600], 0.5), speech_span([300], 0.5)
    (1000.0, 1600.0, 300.0)
    """
    lengths = [int(n) for n in lengths]
    shared = sum(min(a, b) for a, b in zip(lengths[:-1], lengths[1:]))
    return float(sum(lengths) - overlap * shared)


def crop_speech_lengths(lengths: Sequence[int], overlap: float, crop: int) -> Tuple[int, ...]:
    """Speech lengths to keep of N utterances so that their mixture fits a crop.

    Utterances with ``lengths`` samples of speech, chained at ``overlap``, span
    :func:`speech_span` samples. When that exceeds ``crop``, a crop cut from
    the mixture would lose a speaker or change the overlap. Instead, each
    utterance is shortened to a window of its speech: every utterance longer
    than a common window length ``w`` is cut to ``w`` (shorter ones are kept
    whole), with the largest ``w`` whose mixture at the *same* overlap spans at
    most ``crop`` samples.

    Example
    -------
    >>> crop_speech_lengths([48000, 56000], 0.5, 32000)  # two long utterances: equal windows
    (21333, 21333)
    >>> crop_speech_lengths([72000, 16000], 0.25, 32000)  # a short one is kept whole
    (20000, 16000)
    >>> crop_speech_lengths([8000, 12000], 1.0, 32000)  # fits already
    (8000, 12000)
    >>> crop_speech_lengths([48000, 8000, 40000], 0.5, 32000)
    (16000, 8000, 16000)
    """
    lengths = tuple(int(n) for n in lengths)
    if speech_span(lengths, overlap) <= crop:
        return lengths

    def fits(window):
        return speech_span([min(n, window) for n in lengths], overlap) <= crop

    # the span grows with the window: bisect for the largest window that fits
    low, high = 0, max(lengths)  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return tuple(min(n, low) for n in lengths)


class OnTheFlyMixer:
    """Builds one training/validation mixture from a CSV row of source files.

    Arguments
    ---------
    sample_rate : int
        Working sample rate.
    overlap_range, noise_activity_range : tuple of float
        Uniform ranges of the overlap ratio and the noise activity.
    segment_len : int, optional
        Crop length in samples (no crop when None or longer than the mixture).
    pool : list of dict, optional
        Training rows to draw new speaker sets from (dynamic mixing).
    speed_perturb : bool
        Resample each source by a factor drawn from ``SPEED_FACTORS``.
    max_source_seconds : float, optional
        Speech cap used at preparation (keeps sources consistent with the tests).
    activity : ActivityCache, optional
        Per-sample webrtcvad labels of the source files (items get ``s{i}_vad``).
    num_spks : int
        Sources per mixture (1: speech enhancement, the row must have noise).

    Example
    -------
    >>> import tempfile, os, soundfile as sf
    >>> folder = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> for name in ("a.wav", "b.wav"):
    ...     sf.write(os.path.join(folder, name), 0.1 * rng.standard_normal(8000), 8000)
    >>> row = {"s1_wav": os.path.join(folder, "a.wav"), "s2_wav": os.path.join(folder, "b.wav"),
    ...        "s1_start": 0, "s1_end": 8000, "s2_start": 0, "s2_end": 8000,
    ...        "s1_gain": 1.0, "s2_gain": 1.0}
    >>> out = OnTheFlyMixer(8000, (0.5, 0.5), segment_len=4000).mix(row, rng)
    >>> out["mix_sig"].shape, bool(torch.equal(out["mix_sig"], out["s1_sig"] + out["s2_sig"]))
    (torch.Size([4000]), True)
    """

    def __init__(self, sample_rate: int, overlap_range: Sequence[float] = (0.25, 1.0),
                 noise_activity_range: Sequence[float] = (0.0, 1.0), segment_len: Optional[int] = None,
                 pool: Optional[List[dict]] = None, speed_perturb: bool = False,
                 max_source_seconds: Optional[float] = None, activity: Optional[ActivityCache] = None,
                 num_spks: int = 2):
        if num_spks < 1:
            raise ValueError(f"num_spks must be at least 1, got {num_spks}")
        self.sample_rate = sample_rate
        self.overlap_range = tuple(overlap_range)
        self.noise_activity_range = tuple(noise_activity_range)
        self.segment_len = segment_len
        self.speed_perturb = speed_perturb
        self.cap = max_source_seconds
        self.activity = activity
        self.num_spks = num_spks
        # dynamic-mixing pool: every distinct source utterance of the training rows
        self.utterances, self.noises = [], []
        if pool:
            seen = {}
            for row in pool:
                for i in range(1, num_spks + 1):
                    self._check_row(row, i)
                    seen[row[f"s{i}_wav"]] = (row[f"s{i}_wav"], row[f"s{i}_spk"],
                                              (int(row[f"s{i}_start"]), int(row[f"s{i}_end"])))
            # grouped by speaker: [lo, hi) of each speaker's utterances
            self.utterances = sorted(seen.values(), key=lambda u: (u[1], u[0]))
            self._speaker_span = {}
            for i, (_, spk, _) in enumerate(self.utterances):
                lo, _ = self._speaker_span.get(spk, (i, i))
                self._speaker_span[spk] = (lo, i + 1)
            self.noises = sorted({row["noise_wav"] for row in pool if row.get("noise_wav")})
            if len(self._speaker_span) < num_spks:
                raise ValueError(f"dynamic mixing of {num_spks} sources needs training utterances of at least "
                                 f"{num_spks} speakers, found {len(self._speaker_span)}")

    def _check_row(self, row: dict, index: int):
        if f"s{index}_wav" not in row:
            raise ValueError(f"row {row.get('ID', '?')!r} has no s{index}_wav column, but num_spks is "
                             f"{self.num_spks}: its CSV was prepared for fewer sources (rerun the preparation "
                             f"with num_spks: {self.num_spks})")

    def _source(self, path: str, bounds: Tuple[int, int], rng: np.random.Generator):
        """Speech region of a source (optionally speed-perturbed), its bounds and VAD labels."""
        x = load_audio(path, self.sample_rate)
        labels = self.activity(path, x) if self.activity is not None else None
        lo, hi, (start, end) = speech_region(len(x), bounds, self.sample_rate, self.cap)
        x = x[lo:hi]
        labels = labels[lo:hi] if labels is not None else None
        if self.speed_perturb:
            factor = float(rng.choice(SPEED_FACTORS))
            if factor != 1.0:
                new_rate = int(round(self.sample_rate * factor))
                x = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(x)),
                                                   self.sample_rate, new_rate).numpy()
                start, end = int(start * factor), min(int(end * factor), len(x))
                if labels is not None:  # nearest neighbour onto the new time axis
                    index = np.minimum((np.arange(len(x)) / factor).astype(np.int64), len(labels) - 1)
                    labels = labels[index]
        return x, (start, end), labels

    @staticmethod
    def _window(source, length: int, rng: np.random.Generator):
        """A random window of ``length`` speech samples of a ``_source`` result.

        The window's bounds are its first and last labelled speech samples
        (its edges without labels), so that the overlap is planned on speech.
        """
        x, (start, end), labels = source
        if length >= end - start:
            return x[start:end], (0, end - start), None if labels is None else labels[start:end]
        lo = int(rng.integers(start, end - length + 1))
        x = x[lo:lo + length]
        bounds = (0, length)
        if labels is not None:
            labels = labels[lo:lo + length]
            speech = np.flatnonzero(labels)
            if len(speech) and speech[-1] + 1 - speech[0] >= length // 2:
                bounds = (int(speech[0]), int(speech[-1]) + 1)
        return x, bounds, labels

    def _draw_sources(self, rng: np.random.Generator, num: int) -> list:
        """``num`` utterances of different speakers from the pool.

        Each is uniform over the utterances of the speakers not drawn yet.
        """
        drawn, taken = [], []  # taken: [lo, hi) spans of the drawn speakers, sorted
        for _ in range(num):
            index = int(rng.integers(len(self.utterances) - sum(hi - lo for lo, hi in taken)))
            for lo, hi in taken:  # skip the spans of the speakers drawn already
                if index >= lo:
                    index += hi - lo
            utterance = self.utterances[index]
            drawn.append(utterance)
            taken = sorted(taken + [self._speaker_span[utterance[1]]])
        return drawn

    def _draw_pair(self, rng: np.random.Generator):
        """Two utterances of different speakers from the pool."""
        return tuple(self._draw_sources(rng, 2))

    def mix(self, row: dict, rng: np.random.Generator, random_crop: bool = True) -> Dict[str, object]:
        """Mix the sources of ``row`` (or a random pool draw) and crop the mixture.

        Returns a dict with ``mix_sig`` and ``s{i}_sig`` (+ ``noise_sig``,
        ``s{i}_vad``) as 1-D float tensors of equal length, and
        ``source_files`` (the ``num_spks`` paths).
        """
        gains = None  # None: active-RMS normalisation + random SIRs
        if self.utterances:
            drawn = self._draw_sources(rng, self.num_spks)
            paths, bounds = [u[0] for u in drawn], [u[2] for u in drawn]
        else:
            for i in range(1, self.num_spks + 1):
                self._check_row(row, i)
            keys = [f"s{i}" for i in range(1, self.num_spks + 1)]
            paths = [row[f"{k}_wav"] for k in keys]
            bounds = [(int(row[f"{k}_start"]), int(row[f"{k}_end"])) for k in keys]
            gains = [float(row[f"{k}_gain"]) for k in keys]
        sources = [self._source(p, b, rng) for p, b in zip(paths, bounds)]
        overlap = float(rng.uniform(*self.overlap_range))
        seg, cut = self.segment_len, False
        if seg:
            # keep every speaker and the sampled overlap inside the crop
            speech = tuple(end - start for _, (start, end), _ in sources)
            lengths = crop_speech_lengths(speech, overlap, seg)
            if lengths != speech:
                sources = [self._window(s, n, rng) for s, n in zip(sources, lengths)]
                cut = True
        noise, activity = None, 1.0
        noise_path = row.get("noise_wav")
        if noise_path:
            if self.noises:
                noise_path = self.noises[int(rng.integers(len(self.noises)))]
            noise = load_audio(noise_path, self.sample_rate, first_channel=True)
            activity = float(rng.uniform(*self.noise_activity_range))
        labels = [s[2] for s in sources] if self.activity is not None else None
        m = mix_utterances([s[0] for s in sources], self.sample_rate, overlap, [s[1] for s in sources],
                           gains=gains, noise=noise, noise_activity=activity, rng=rng, labels=labels)
        signals = {"mix_sig": m.mix}
        signals.update({f"s{i + 1}_sig": x for i, x in enumerate(m.sources)})
        if m.noise is not None:
            signals["noise_sig"] = m.noise
        if labels is not None:
            signals.update({f"s{i + 1}_vad": a.astype(np.float32) for i, a in enumerate(m.active)})
        length = len(m.mix)
        if cut and length < seg:
            # windows cut to fit the crop: pad their mixture with silence to the crop length
            before = int(rng.integers(0, seg - length + 1)) if random_crop else (seg - length) // 2
            signals = {k: np.pad(v, (before, seg - length - before)) for k, v in signals.items()}
            length = seg
        start = 0
        if seg and length > seg:
            union = (min(b[0] for b in m.bounds), max(b[1] for b in m.bounds))
            if union[1] - union[0] <= seg:  # the crop holds all the speech of every source
                lo, hi = max(union[1] - seg, 0), min(union[0], length - seg)
                start = int(rng.integers(lo, hi + 1)) if random_crop else (lo + hi) // 2
            else:  # centre of the region where all sources talk (else of all the speech)
                first_end, last_start = min(b[1] for b in m.bounds), max(b[0] for b in m.bounds)
                centre = (last_start + first_end) // 2 if last_start < first_end else sum(union) // 2
                start = int(np.clip(centre - seg // 2, 0, length - seg))
        crop = slice(start, start + seg if seg else length)
        out = {k: torch.from_numpy(np.ascontiguousarray(v[crop])) for k, v in signals.items()}
        out["source_files"] = tuple(paths)
        return out
