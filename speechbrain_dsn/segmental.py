"""Segmental SI-SDR and the signal-dependent weights of the complexity loss.

Implements Section III-G of "Dynamic Slimmable Networks for Efficient Speech
Separation": the segmental SI-SDR (segSI-SDR) on 96 ms segments with 50 %
overlap (Section IV-B), the activity of each source per segment, the
signal-dependent weighting factor of eq. (20), and the mapping of per-segment
values onto encoder frames.

Eq. (20) is printed as ``min(e^{a (segSI-SDR_t - b) - 1}, 1)``, which jumps
from 0 to ``e^{-1} = 0.37`` at ``segSI-SDR_t = b``. That printed form is the
default. The text calls ``b`` "the threshold after which the weighting factor
is non-zero", which could also describe the continuous reading
``min(e^{a (segSI-SDR_t - b)} - 1, 1)`` (0 at ``b``, 1 from ``b + ln 2 / a``,
about 6 dB earlier than the printed form's ``b + 1 / a``); it is kept as
``form="continuous"`` (``sd_form: continuous`` in the recipe).

Speech activity (silence / one speaker / overlap) comes from per-sample
webrtcvad labels, the same ones that the evaluation uses.

Shape letters used in this module:
B batch, T time samples, C sources, S segments, L samples per segment.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from speechbrain.nnet.losses import cal_si_snr


def _check_shape(x, name, dims, like=None, like_name=None) -> None:
    """Raises a ValueError naming ``x`` unless it has the dimensions ``dims``
    (names, e.g. ``("batch", "time")``) and, if given, the shape of ``like``."""
    if x.dim() != len(dims):
        raise ValueError(f"expected {name} of shape [{', '.join(dims)}], got {tuple(x.shape)}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} {tuple(x.shape)} must match {like_name} {tuple(like.shape)} (the same shape)")


def _check_pair(estimates: torch.Tensor, targets: torch.Tensor) -> None:
    _check_shape(estimates, "estimates", ("batch", "time", "sources"), targets, "targets")


def _segment_geometry(sample_rate: int, segment_ms: float, overlap: float) -> Tuple[int, int]:
    """Returns (segment length, segment hop) in samples."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    length = int(round(segment_ms * sample_rate / 1000.0))
    hop = max(1, int(round(length * (1.0 - overlap))))
    if length < 1:
        raise ValueError(f"segment of {segment_ms} ms at {sample_rate} Hz has no samples")
    return length, hop


def _segment(x: torch.Tensor, length: int, hop: int) -> torch.Tensor:
    """Cuts [B, T, C] into [B, S, C, L] segments; see ``segmental_si_sdr``."""
    if x.shape[1] < length:
        # A signal shorter than one segment becomes one zero-padded segment.
        x = torch.nn.functional.pad(x, (0, 0, 0, length - x.shape[1]))
    # [B, S, C, L]; the trailing partial segment is dropped.
    return x.unfold(1, length, hop)


def segmental_si_sdr(
    estimates: torch.Tensor,
    targets: torch.Tensor,
    sample_rate: int,
    segment_ms: float = 96.0,
    overlap: float = 0.5,
) -> torch.Tensor:
    """SI-SDR (dB) of each source on short overlapping segments (segSI-SDR).

    Segment ``s`` covers samples ``[s * hop, s * hop + L)`` with
    ``L = round(segment_ms * sample_rate / 1000)`` and
    ``hop = round(L * (1 - overlap))``. The trailing partial segment is
    dropped (``S = 1 + (T - L) // hop``); ``segments_to_frames`` gives the
    frames past the last segment that segment's value. A signal shorter than
    one segment is zero-padded to a single segment. The estimates must be
    already matched to the targets (e.g. by ``pit_si_sdr``); SI-SDR is
    SpeechBrain's ``cal_si_snr`` (zero-mean, eps = 1e-8, so a silent target
    gives about -80 dB).

    Arguments
    ---------
    estimates : torch.Tensor
        Estimated sources, shape [B, T, C], ordered like ``targets``.
    targets : torch.Tensor
        Reference sources, shape [B, T, C].
    sample_rate : int
        Sampling rate in Hz.
    segment_ms : float
        Segment length in ms (96 ms in the paper).
    overlap : float
        Fraction of overlap between consecutive segments (0.5 in the paper).

    Returns
    -------
    torch.Tensor
        segSI-SDR in dB, shape [B, S, C].

    Example
    -------
    >>> targets = torch.randn(2, 8000, 2)
    >>> seg = segmental_si_sdr(targets + 0.1 * torch.randn(2, 8000, 2), targets, 8000)
    >>> seg.shape  # 1 + (8000 - 768) // 384 segments
    torch.Size([2, 19, 2])
    >>> bool(((seg > 15) & (seg < 25)).all())
    True
    """
    _check_pair(estimates, targets)
    length, hop = _segment_geometry(sample_rate, segment_ms, overlap)
    batch, _, sources = targets.shape
    # [B, S, C, L]
    est_seg = _segment(estimates, length, hop)
    tgt_seg = _segment(targets, length, hop)
    num_segments = est_seg.shape[1]
    # cal_si_snr wants [L, N, C]; fold batch and segments into N.
    # [L, B * S, C]
    est_seg = est_seg.permute(3, 0, 1, 2).reshape(length, -1, sources)
    tgt_seg = tgt_seg.permute(3, 0, 1, 2).reshape(length, -1, sources)
    # cal_si_snr multiplies its estimate in place, hence the clone.
    # [1, B * S, C]
    neg = cal_si_snr(tgt_seg, est_seg.clone())
    return -neg.reshape(batch, num_segments, sources)


def speech_labels(signals: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Per-sample webrtcvad speech labels of each source, [B, T, C] (0./1.).

    The same definition as the labels that the data pipeline caches per
    source file (:class:`~speechbrain_dsn.data.vad.ActivityCache`); use it
    only when a batch carries no labels, since it runs the VAD on the CPU.

    Example
    -------
    >>> speech_labels(torch.zeros(1, 800, 2), 8000).sum()
    tensor(0.)
    """
    from speechbrain_dsn.data.vad import speech_activity

    _check_shape(signals, "signals", ("batch", "time", "sources"))
    x = signals.detach().cpu().numpy()
    labels = [[speech_activity(x[b, :, c], sample_rate) for c in range(x.shape[2])] for b in range(x.shape[0])]
    return torch.tensor(np.array(labels, dtype=np.float32)).permute(0, 2, 1).to(signals.device)


def segment_activity(
    labels: torch.Tensor,
    sample_rate: int,
    segment_ms: float = 96.0,
    overlap: float = 0.5,
) -> torch.Tensor:
    """Marks which sources speak in each segment, from per-sample VAD labels.

    A source is active in a segment when more than half of the segment's
    samples are labelled speech. Training (eq. 20: silence gets w = 1, a
    one-speaker segment uses that speaker's segSI-SDR) and evaluation (the
    segment types of Figs. 9 and 11) both use this rule on the same
    webrtcvad labels. Segments are those of ``segmental_si_sdr``.

    Arguments
    ---------
    labels : torch.Tensor
        Speech labels (bool or 0./1.), shape [B, T, C].
    sample_rate : int
        Sampling rate in Hz.
    segment_ms : float
        Segment length in ms.
    overlap : float
        Fraction of overlap between consecutive segments.

    Returns
    -------
    torch.Tensor
        Boolean activity, shape [B, S, C].

    Example
    -------
    >>> labels = torch.ones(1, 8000, 2)
    >>> labels[:, 4000:, 1] = 0.0
    >>> active = segment_activity(labels, 8000)
    >>> bool(active[0, :, 0].all()), bool(active[0, -1, 1]), bool(active[0, 0, 1])
    (True, False, True)
    """
    _check_shape(labels, "labels", ("batch", "time", "sources"))
    length, hop = _segment_geometry(sample_rate, segment_ms, overlap)
    # [B, S, C]
    return _segment(labels.detach().float(), length, hop).mean(-1) > 0.5


SD_FORMS = ("printed", "continuous")


def signal_dependent_weights(
    seg_si_sdr: torch.Tensor,
    active: torch.Tensor,
    a: float = 0.05,
    b: float = 30.0,
    form: str = "printed",
) -> torch.Tensor:
    """Signal-dependent weighting factor of eq. (20), one per segment.

    ``segSI-SDR_t`` is the mean segSI-SDR over the sources active in the
    segment, so a single-speaker segment uses that speaker's score. The
    weight is ``0`` if ``segSI-SDR_t < b``; otherwise, with
    ``form="printed"`` (eq. 20 as printed), ``min(exp(a * (segSI-SDR_t - b) - 1), 1)``,
    which starts at ``e^-1 = 0.37`` at ``b`` and reaches 1 at ``b + 1 / a``;
    with ``form="continuous"``, ``min(exp(a * (segSI-SDR_t - b)) - 1, 1)``,
    which starts at 0 at ``b`` and reaches 1 at ``b + ln(2) / a``. Segments
    without an active source (silence) get the maximum weight 1. The
    weights carry no gradient.

    Arguments
    ---------
    seg_si_sdr : torch.Tensor
        segSI-SDR in dB, shape [B, S, C].
    active : torch.Tensor
        Boolean source activity, shape [B, S, C].
    a : float
        Steepness of the exponential.
    b : float
        Threshold in dB below which the weight is zero.
    form : str
        ``"printed"`` or ``"continuous"`` (see above).

    Returns
    -------
    torch.Tensor
        Weights in [0, 1], shape [B, S].

    Example
    -------
    >>> seg = torch.tensor([[[20.0, 30.0], [40.0, 0.0], [0.0, 0.0]]])
    >>> active = torch.tensor([[[True, True], [True, False], [False, False]]])
    >>> signal_dependent_weights(seg, active, a=0.05, b=30.0)
    tensor([[0.0000, 0.6065, 1.0000]])
    >>> signal_dependent_weights(seg, active, a=0.05, b=30.0, form="continuous")
    tensor([[0.0000, 0.6487, 1.0000]])
    """
    if form not in SD_FORMS:
        raise ValueError(f"form must be one of {SD_FORMS}, got {form!r}")
    _check_shape(seg_si_sdr, "seg_si_sdr", ("batch", "segments", "sources"))
    _check_shape(active, "active", ("batch", "segments", "sources"), seg_si_sdr, "seg_si_sdr")
    seg_si_sdr = seg_si_sdr.detach()
    active = active.bool()
    # [B, S]
    num_active = active.sum(-1)
    # where() rather than a product, so that -inf/NaN of silent sources vanish
    total = torch.where(active, seg_si_sdr, torch.zeros_like(seg_si_sdr))
    score = total.sum(-1) / num_active.clamp(min=1)
    if form == "printed":
        rising = torch.clamp(torch.exp(a * (score - b) - 1.0), max=1.0)
    else:
        rising = torch.clamp(torch.exp(a * (score - b)) - 1.0, max=1.0)
    weights = torch.where(score < b, torch.zeros_like(score), rising)
    return torch.where(num_active == 0, torch.ones_like(weights), weights)


def segments_to_frames(
    values: torch.Tensor,
    num_frames: int,
    frame_hop: int,
    frame_length: int,
    sample_rate: int,
    segment_ms: float = 96.0,
    overlap: float = 0.5,
) -> torch.Tensor:
    """Maps per-segment values to encoder frames.

    Encoder frame ``t`` covers samples ``[t * frame_hop, t * frame_hop +
    frame_length)``; its centre is sample ``t * frame_hop + frame_length // 2``.
    Each frame takes the mean of the segments (as in ``segmental_si_sdr``)
    that contain its centre; frames past the last segment take the last
    segment's value.

    Arguments
    ---------
    values : torch.Tensor
        Per-segment values, shape [B, S].
    num_frames : int
        Number of encoder frames.
    frame_hop : int
        Encoder stride in samples.
    frame_length : int
        Encoder kernel size in samples.
    sample_rate : int
        Sampling rate in Hz.
    segment_ms : float
        Segment length in ms.
    overlap : float
        Fraction of overlap between consecutive segments.

    Returns
    -------
    torch.Tensor
        Per-frame values, shape [B, num_frames].

    Example
    -------
    >>> values = torch.tensor([[0.0, 1.0, 2.0]])  # 3 segments of 768 samples
    >>> frames = segments_to_frames(values, 200, 8, 16, 8000)
    >>> frames[0, [0, 46, 47, 94, 95, 142, 143, 199]]  # centres 8, 376, 384, ...
    tensor([0.0000, 0.0000, 0.5000, 0.5000, 1.5000, 1.5000, 2.0000, 2.0000])
    """
    _check_shape(values, "values", ("batch", "segments"))
    length, hop = _segment_geometry(sample_rate, segment_ms, overlap)
    num_segments = values.shape[1]
    device = values.device
    # [F, 1]
    centres = (torch.arange(num_frames, device=device) * frame_hop + frame_length // 2).unsqueeze(1)
    # [1, S]
    starts = (torch.arange(num_segments, device=device) * hop).unsqueeze(0)
    # [F, S]
    cover = (centres >= starts) & (centres < starts + length)
    # Frames past the last segment (the dropped partial one) reuse it.
    uncovered = ~cover.any(dim=1)
    cover[uncovered, num_segments - 1] = True
    cover = cover.to(values.dtype)
    # [B, F]
    return values @ cover.t() / cover.sum(dim=1)
