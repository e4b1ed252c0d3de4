"""Audio reading, validation and speech-region cropping shared by preparation and loading.

Supports the data preparation of paper Section IV-A: every source utterance is
read as mono float at the recipe's sample rate, and mixed only around its
VAD-bounded speech region (plus a short margin of context), optionally capped
to a maximum speech duration to keep demo evaluation cheap.
"""

import pathlib
from typing import Optional, Tuple, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio

SUPPORTED_SUFFIXES = (".wav", ".flac", ".ogg")
SPEECH_MARGIN_S = 0.25  # context kept around the speech region of each source

PathLike = Union[str, pathlib.Path]


class BadAudioError(ValueError):
    """A file that cannot be used as a source: corrupt, empty or multi-channel."""


def load_audio(
    path: PathLike,
    sample_rate: int,
    resample: bool = True,
    first_channel: bool = False,
    downmix: bool = False,
) -> np.ndarray:
    """Read a mono audio file as float32 ``[time]`` at ``sample_rate``.

    A missing file is a ``FileNotFoundError``; an unreadable, empty or
    multi-channel file, or one with NaN or infinite samples, is a
    ``BadAudioError``; each message names the file and the problem.

    Arguments
    ---------
    path : str or pathlib.Path
        Audio file readable by soundfile (wav, flac, ogg).
    sample_rate : int
        Rate the signal must have.
    resample : bool
        If True, other rates are resampled; if False a mismatch raises
        ``ValueError`` (corpora such as ``wav8k`` folders fix the rate).
    first_channel : bool
        If True, keep channel 0 of multi-channel files (WHAM! noise is
        binaural).
    downmix : bool
        If True, average the channels of multi-channel files (mixtures to
        separate).  With neither option multi-channel files raise
        ``BadAudioError``.

    Returns
    -------
    np.ndarray
        The signal, float32 in [-1, 1].

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.wav")
    >>> sf.write(path, np.full(160, 0.5, dtype=np.float32), 16000)
    >>> load_audio(path, 8000).shape
    (80,)
    >>> load_audio(path, 8000, resample=False)
    Traceback (most recent call last):
     ...
    ValueError: ... has a sample rate of 16000 Hz, expected 8000 Hz ...
    """
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        signal, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several error types
        raise BadAudioError(f"cannot read {path} (corrupt or unsupported format: {err})")
    if signal.shape[0] == 0:
        raise BadAudioError(f"{path} is empty (0 samples)")
    bad = int(np.count_nonzero(~np.isfinite(signal)))
    if bad:
        raise BadAudioError(f"{path} has {bad} NaN or infinite samples (of {signal.size})")
    if signal.shape[1] > 1 and downmix:
        signal = signal.mean(axis=1, keepdims=True)
    elif signal.shape[1] > 1 and not first_channel:
        raise BadAudioError(
            f"{path} has {signal.shape[1]} channels; only mono sources are used "
            "(multi-channel files are skipped, not downmixed)"
        )
    signal = signal[:, 0]
    if rate != sample_rate:
        if not resample:
            raise ValueError(
                f"{path} has a sample rate of {rate} Hz, expected {sample_rate} Hz "
                "for this corpus layout (check the wav8k/wav16k folder and --sample_rate)"
            )
        signal = torchaudio.functional.resample(
            torch.from_numpy(np.ascontiguousarray(signal)), rate, sample_rate
        ).numpy()
    return signal


def speech_region(
    length: int,
    bounds: Tuple[int, int],
    sample_rate: int,
    max_source_seconds: Optional[float] = None,
    margin_s: float = SPEECH_MARGIN_S,
) -> Tuple[int, int, Tuple[int, int]]:
    """Part of a source used for mixing: its speech region plus a margin.

    Arguments
    ---------
    length : int
        Number of samples of the source.
    bounds : tuple of int
        VAD speech boundaries ``(start, end)`` in the source's samples.
    sample_rate : int
        Sampling rate in Hz.
    max_source_seconds : float, optional
        Cap on the speech duration: nothing after ``start + cap`` is kept.
    margin_s : float
        Context kept before ``start`` and after ``end`` (silence, breaths).

    Returns
    -------
    lo, hi : int
        The region ``source[lo:hi]``.
    bounds : tuple of int
        Speech boundaries relative to ``lo``.

    Example
    -------
    >>> speech_region(16000, (4000, 12000), 8000, max_source_seconds=0.5, margin_s=0.1)
    (3200, 8000, (800, 4800))
    """
    start, end = bounds
    margin = int(round(margin_s * sample_rate))
    lo, hi = max(start - margin, 0), min(end + margin, length)
    if max_source_seconds is not None:
        # nothing after start + cap is used, not even as margin (it may hold speech)
        hi = min(hi, start + int(round(max_source_seconds * sample_rate)))
        end = min(end, hi)
    return lo, hi, (start - lo, end - lo)


def write_audio(path: PathLike, signal: np.ndarray, sample_rate: int, subtype: str = "FLOAT"):
    """Write a mono float signal (``FLOAT`` keeps ``mix == s1 + s2`` exact on disk).

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "y.wav")
    >>> x = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    >>> write_audio(path, x, 8000)
    >>> bool(np.array_equal(sf.read(path, dtype="float32")[0], x))
    True
    """
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(signal, dtype=np.float32), sample_rate, subtype=subtype)
