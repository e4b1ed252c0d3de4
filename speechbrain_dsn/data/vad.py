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

from typing import Tuple, Union

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
) -> Tuple[int, int]:
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

    Returns
    -------
    (start, end) : tuple of int
        Speech region ``signal[start:end]`` in samples (``end`` exclusive).
        When no speech run is found (silence, zeros, empty input) this falls
        back to the whole signal, ``(0, len(signal))``, so that callers can
        always mix the utterance.

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
    >>> speech_boundaries(np.zeros(4000), sr)
    (0, 4000)
    """
    mask = speech_activity(signal, sample_rate, frame_ms, mode)
    num = len(mask)
    # run-length encode the hangover-free mask (vectorised) and drop short blips
    changes = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    run_starts = np.flatnonzero(changes == 1)
    run_ends = np.flatnonzero(changes == -1)
    keep = (run_ends - run_starts) >= max(1, min_speech_ms * sample_rate // 1000)
    if not keep.any():
        return 0, num
    return int(run_starts[keep][0]), int(run_ends[keep][-1])
