"""Voice activity detection for overlap-controlled mixing (paper Section IV-A).

The paper defines the overlap ratio of a two-speaker mixture relative to the
*effective* duration of the shorter utterance, "after excluding leading and
trailing silences", which it measures with a voice activity detector. This
module wraps the WebRTC VAD (``webrtcvad``, from ``webrtcvad-wheels``), which
only accepts 16-bit mono PCM at 8, 16, 32 or 48 kHz in 10, 20 or 30 ms frames.
Other sample rates are resampled internally and the decisions are mapped back
onto the samples of the input signal.

Decisions are taken on the peak-normalised signal, so that they do not depend
on the gain a source receives in a mixture: the overlap measured on a placed,
scaled source then agrees with the one planned from the raw source.
"""

import hashlib
import os
import tempfile
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torchaudio
import webrtcvad

VAD_RATES = (8000, 16000, 32000, 48000)
VAD_FRAME_MS = (10, 20, 30)

Signal = Union[np.ndarray, torch.Tensor]


def _as_numpy(signal: Signal) -> np.ndarray:
    """Return a 1-D float32 numpy copy of ``signal``, checking its shape."""
    if isinstance(signal, torch.Tensor):
        signal = signal.detach().cpu().numpy()
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 1:
        raise ValueError(f"expected a 1-D signal [time], got shape {signal.shape}")
    return signal


def _frame_decisions(
    signal: Signal, sample_rate: int, frame_ms: int, mode: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Run the WebRTC VAD frame by frame.

    Returns
    -------
    decisions : np.ndarray
        Boolean speech decision per frame, shape ``[F]``.
    edges : np.ndarray
        Frame edges in samples of the *input* signal, shape ``[F + 1]``
        (``edges[0] == 0``, ``edges[-1] == len(signal)``).
    """
    if frame_ms not in VAD_FRAME_MS:
        raise ValueError(f"frame_ms must be one of {VAD_FRAME_MS}, got {frame_ms}")
    if mode not in (0, 1, 2, 3):
        raise ValueError(f"mode must be in 0..3, got {mode}")
    x = _as_numpy(signal)
    num = len(x)
    if num == 0:
        return np.zeros(0, dtype=bool), np.zeros(1, dtype=np.int64)
    # resample to the closest rate the VAD accepts (never below the input rate)
    vad_rate = next((r for r in VAD_RATES if r >= sample_rate), VAD_RATES[-1])
    if vad_rate != sample_rate:
        x = torchaudio.functional.resample(
            torch.from_numpy(x), sample_rate, vad_rate
        ).numpy()
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0:
        x = x * (0.9 / peak)  # gain-invariant decisions, see module docstring
    frame_len = vad_rate * frame_ms // 1000
    num_frames = -(-len(x) // frame_len)  # ceil: the last partial frame counts
    pcm = np.zeros(num_frames * frame_len, dtype=np.int16)
    pcm[: len(x)] = np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
    frames = pcm.reshape(num_frames, frame_len)
    vad = webrtcvad.Vad(mode)
    # one C call per frame (not per sample): ~1 us each
    decisions = np.fromiter(
        (vad.is_speech(f.tobytes(), vad_rate) for f in frames),
        dtype=bool,
        count=num_frames,
    )
    # frame edges mapped back onto the input sampling grid
    edges = np.round(np.arange(num_frames + 1) * frame_len * sample_rate / vad_rate)
    edges = np.minimum(edges.astype(np.int64), num)
    edges[-1] = num
    return decisions, edges


def _one_pass(signal: np.ndarray, sample_rate: int, frame_ms: int, mode: int) -> np.ndarray:
    decisions, edges = _frame_decisions(signal, sample_rate, frame_ms, mode)
    return np.repeat(decisions, np.diff(edges))


def speech_activity(
    signal: Signal, sample_rate: int, frame_ms: int = 10, mode: int = 3
) -> np.ndarray:
    """Per-sample speech/non-speech mask from the WebRTC VAD.

    The WebRTC VAD keeps flagging speech for a few frames after each offset
    (its hangover), which would make utterances look ~0.1 s longer when they
    are followed by silence than when they are cut. The mask is therefore the
    intersection of a forward pass and a pass over the time-reversed signal,
    so both onsets and offsets are hangover-free.

    Arguments
    ---------
    signal : np.ndarray or torch.Tensor
        Mono signal ``[time]``, float in [-1, 1].
    sample_rate : int
        Sampling rate of ``signal`` in Hz (any rate; resampled internally
        when the VAD does not support it).
    frame_ms : int
        VAD frame length, 10, 20 or 30 ms.
    mode : int
        WebRTC aggressiveness, 0 (least) to 3 (most aggressive).

    Returns
    -------
    np.ndarray
        Boolean mask of length ``len(signal)``; frame decisions expanded to
        the samples they cover.

    Example
    -------
    >>> sr = 8000
    >>> t = np.arange(sr) / sr
    >>> tone = 0.5 * np.sin(2 * np.pi * 200 * t) * np.sin(2 * np.pi * 3 * t)
    >>> mask = speech_activity(np.concatenate([np.zeros(sr), tone]), sr)
    >>> mask.shape, bool(mask[:sr].any())
    ((16000,), False)
    """
    x = _as_numpy(signal)
    forward = _one_pass(x, sample_rate, frame_ms, mode)
    backward = _one_pass(np.ascontiguousarray(x[::-1]), sample_rate, frame_ms, mode)[::-1]
    return forward & backward


def speech_boundaries(
    signal: Signal,
    sample_rate: int,
    frame_ms: int = 10,
    mode: int = 2,
    min_speech_ms: int = 50,
    fallback: bool = True,
) -> Optional[Tuple[int, int]]:
    """First and last speech sample of an utterance (leading/trailing silence excluded).

    Isolated blips (clicks, breaths) are ignored: only runs of at least
    ``min_speech_ms`` of speech in the hangover-free mask of
    :func:`speech_activity` count.

    Arguments
    ---------
    signal : np.ndarray or torch.Tensor
        Mono signal ``[time]``, float in [-1, 1].
    sample_rate : int
        Sampling rate of ``signal`` in Hz.
    frame_ms : int
        VAD frame length, 10, 20 or 30 ms.
    mode : int
        WebRTC aggressiveness, 0..3. The default, 2, is one step less
        aggressive than :func:`speech_activity`: mode 3 occasionally drops a
        soft first word, which would move the boundary by hundreds of ms.
    min_speech_ms : int
        Shortest run of speech that counts as speech.
    fallback : bool
        What to return when no speech run is found: the whole signal if
        True, None if False.

    Returns
    -------
    (start, end) : tuple of int
        Speech region ``signal[start:end]`` in samples (``end`` exclusive).
        When no speech run is found (silence, zeros, empty input) this falls
        back to the whole signal, ``(0, len(signal))``, so that callers can
        always mix the utterance (``None`` with ``fallback=False``).

    Example
    -------
    >>> sr = 8000
    >>> t = np.arange(sr) / sr
    >>> voiced = sum(np.sin(2 * np.pi * k * 150 * t) / k for k in range(1, 6))
    >>> voiced *= 0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))  # syllable rate
    >>> signal = np.concatenate([np.zeros(sr), voiced, np.zeros(sr)])
    >>> start, end = speech_boundaries(signal, sr)
    >>> sr <= start <= 1.15 * sr, 1.9 * sr <= end <= 2 * sr
    (True, True)
    >>> speech_boundaries(np.zeros(4000), sr), speech_boundaries(np.zeros(4000), sr, fallback=False)
    ((0, 4000), None)
    """
    mask = speech_activity(signal, sample_rate, frame_ms, mode)
    num = len(mask)
    # run-length encode the hangover-free mask (vectorised) and drop short blips
    changes = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    run_starts = np.flatnonzero(changes == 1)
    run_ends = np.flatnonzero(changes == -1)
    keep = (run_ends - run_starts) >= max(1, min_speech_ms * sample_rate // 1000)
    if not keep.any():
        return (0, num) if fallback else None
    return int(run_starts[keep][0]), int(run_ends[keep][-1])


class ActivityCache:
    """Webrtcvad speech activity of source files, computed once per file.

    The one definition of speech activity used by training (the silence and
    single-speaker segments of the eq. 20 weighting) and by evaluation (the
    segment types of Figs. 9, 11): :func:`speech_activity` of the file as
    read at ``sample_rate``.  Labels are kept on disk when ``folder`` is
    given, as one packed ``.npz`` per file (written atomically, keyed
    by the file's absolute path, size and modification time and the rate), so
    DataLoader workers, DDP processes and later runs share them.

    Arguments
    ---------
    sample_rate : int
        Rate at which the files are read (and the labels are given).
    folder : str or pathlib.Path, optional
        On-disk cache folder; ``None`` keeps the labels in memory only.

    Example
    -------
    >>> import os, tempfile, soundfile as sf
    >>> sr = 8000
    >>> t = np.arange(sr) / sr
    >>> voiced = sum(np.sin(2 * np.pi * k * 150 * t) / k for k in range(1, 6))
    >>> voiced *= 0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    >>> tmp = tempfile.mkdtemp()
    >>> path = os.path.join(tmp, "a.wav")
    >>> sf.write(path, np.concatenate([np.zeros(sr), voiced]), sr)
    >>> cache = ActivityCache(sr, os.path.join(tmp, "vad"))
    >>> labels = cache(path)
    >>> labels.shape, bool(labels[:sr].any()), bool(labels[sr:].mean() > 0.7)
    ((16000,), False, True)
    >>> bool(np.array_equal(ActivityCache(sr, os.path.join(tmp, "vad"))(path), labels))  # from disk
    True
    """

    def __init__(self, sample_rate: int, folder=None):
        self.sample_rate = int(sample_rate)
        self.folder = None if folder is None else os.fspath(folder)
        self._memory = {}

    def _file(self, path: str) -> str:
        stat = os.stat(path)
        key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{self.sample_rate}"
        return os.path.join(self.folder, hashlib.sha1(key.encode()).hexdigest() + ".npz")

    def __call__(self, path, signal: Optional[np.ndarray] = None) -> np.ndarray:
        """Boolean per-sample speech activity of the file at ``path``.

        ``signal`` may pass the file's samples (as read at ``sample_rate``)
        when the caller has them already; it must be the whole file.
        With a ``folder``, labels are read from disk on every call (a few kB,
        beside the audio read itself) rather than held in memory, so that
        each DataLoader worker does not keep the labels of a whole corpus.
        """
        path = os.fspath(path)
        if self.folder is None and path in self._memory:
            return self._memory[path]
        cached = self._file(path) if self.folder else None
        labels = _load_labels(cached) if cached else None
        if labels is None or (signal is not None and len(labels) != len(signal)):
            if signal is None:
                from speechbrain_dsn.data.audio import load_audio  # audio imports this module

                signal = load_audio(path, self.sample_rate)
            labels = speech_activity(signal, self.sample_rate)
            if cached:
                _save_labels(cached, labels)
        if self.folder is None:
            self._memory[path] = labels
        return labels


def _load_labels(path: str) -> Optional[np.ndarray]:
    """Labels saved by :func:`_save_labels`, or None if missing or unreadable."""
    try:
        with np.load(path) as data:
            return np.unpackbits(data["bits"], count=int(data["length"])).astype(bool)
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _save_labels(path: str, labels: np.ndarray) -> None:
    """Packed labels, written to a temporary file and renamed (never half-written)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, bits=np.packbits(labels), length=np.int64(len(labels)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
