"""Training objectives of the dynamic slimmable network (DSN).

Implements the losses of Section III-F and III-G of "Dynamic Slimmable
Networks for Efficient Speech Separation":

* eq. (17): utterance-level permutation-invariant (PIT) SI-SDR loss,
  built on SpeechBrain's ``PitWrapper`` and ``cal_si_snr``;
* eq. (18): complexity loss, the (weighted) mean squared distance of the
  predicted utilization ``U_t`` from the lowest level ``min(U)``;
* eq. (19): total loss ``L_signal + alpha * L_complexity``;
* eq. (20): signal-dependent (SD) weighting factor ``w_t`` computed from the
  segmental SI-SDR (segSI-SDR) on 96 ms segments with 50 % overlap
  (Section IV-B).

The segmental SI-SDR and the eq. (20) weights live in
:mod:`speechbrain_dsn.segmental` and are re-exported here.

Shape letters used in this module:
B batch, T time samples (or encoder frames where stated), C sources,
S segments, L samples per segment.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from speechbrain.nnet.losses import PitWrapper, cal_si_snr

from .segmental import (
    _check_pair,
    _check_shape,
    segment_activity,
    segmental_si_sdr,
    segments_to_frames,
    signal_dependent_weights,
    speech_labels,
)

__all__ = [
    "complexity_loss",
    "dsn_loss",
    "pit_si_sdr",
    "segment_activity",
    "segmental_si_sdr",
    "segments_to_frames",
    "signal_dependent_weights",
]

WEIGHTINGS = ("si", "sd")


def pit_si_sdr(estimates: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Utterance-level PIT SI-SDR loss, eq. (17).

    Arguments
    ---------
    estimates : torch.Tensor
        Separated signals, shape [B, T, C].
    targets : torch.Tensor
        Reference signals, shape [B, T, C].

    Returns
    -------
    loss : torch.Tensor
        Negative SI-SDR (dB) of the best permutation averaged over sources,
        shape [B]; the same value as SpeechBrain's
        ``get_si_snr_with_pitwrapper(targets, estimates)``.
    estimates_reordered : torch.Tensor
        ``estimates`` with its sources permuted so that source ``j`` matches
        ``targets[..., j]``, shape [B, T, C].

    Example
    -------
    >>> targets = torch.randn(2, 800, 2)
    >>> loss, reordered = pit_si_sdr(targets.flip(-1), targets)
    >>> loss.shape, bool((loss < -60).all()), torch.equal(reordered, targets)
    (torch.Size([2]), True, True)
    """
    _check_pair(estimates, targets)
    # PitWrapper(cal_si_snr) must get the references first, since SI-SDR is
    # not symmetric; its permutation p then pairs estimate i with target p[i].
    loss, perms = PitWrapper(cal_si_snr)(targets, estimates)
    # Inverting p gives, for each target j, the estimate that matches it.
    # [B, C]
    inverse = torch.argsort(torch.as_tensor(perms, device=estimates.device).long(), dim=-1)
    # [B, T, C]
    index = inverse.unsqueeze(1).expand(-1, estimates.shape[1], -1)
    return loss, torch.gather(estimates, 2, index)


def complexity_loss(
    utilization: torch.Tensor,
    min_level: float,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Complexity loss of eq. (18), averaged over frames and batch.

    Arguments
    ---------
    utilization : torch.Tensor
        Predicted utilization per encoder frame, shape [B, T]. Gradients
        flow back through it (e.g. to a straight-through gate).
    min_level : float
        Lowest utilization level ``min(U)``.
    weights : torch.Tensor, optional
        Per-frame weights ``w_t``, shape [B, T]; ``None`` means the
        signal-independent weighting ``w_t = 1``.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Example
    -------
    >>> u = torch.tensor([[0.125, 1.0, 1.0, 0.5]], requires_grad=True)
    >>> complexity_loss(u, 0.125)
    tensor(0.4180, grad_fn=<MeanBackward0>)
    >>> complexity_loss(u, 0.125, torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    tensor(0.0352, grad_fn=<MeanBackward0>)
    """
    _check_shape(utilization, "utilization", ("batch", "frames"))
    # [B, T]
    penalty = (utilization - min_level) ** 2
    if weights is not None:
        _check_shape(weights, "weights", ("batch", "frames"), utilization, "utilization")
        penalty = weights.detach().to(penalty.dtype) * penalty
    return penalty.mean()


def dsn_loss(
    estimates: torch.Tensor,
    targets: torch.Tensor,
    utilization: Optional[torch.Tensor],
    levels: Sequence[float],
    alpha: float = 1.0,
    weighting: str = "sd",
    a: float = 0.05,
    b: float = 30.0,
    sample_rate: int = 8000,
    frame_hop: int = 8,
    frame_length: int = 16,
    segment_ms: float = 96.0,
    activity: Optional[torch.Tensor] = None,
    sd_form: str = "printed",
) -> Dict[str, Optional[torch.Tensor]]:
    """Total DSN objective of eq. (19): PIT SI-SDR + alpha * complexity.

    Arguments
    ---------
    estimates : torch.Tensor
        Separated signals, shape [B, T, C].
    targets : torch.Tensor
        Reference signals, shape [B, T, C].
    utilization : torch.Tensor or None
        Utilization per encoder frame, shape [B, F]; ``None`` for a static
        network or external gating, where the complexity term is zero.
    levels : sequence of float
        Utilization set ``U``; only ``min(U)`` is used.
    alpha : float
        Weight of the complexity loss.
    weighting : str
        ``"si"`` (``w_t = 1``) or ``"sd"`` (eq. 20 on the segSI-SDR of the
        PIT-reordered, detached estimates).
    a : float
        Steepness of the SD weighting.
    b : float
        Threshold (dB) of the SD weighting.
    sample_rate : int
        Sampling rate in Hz.
    frame_hop : int
        Encoder stride in samples.
    frame_length : int
        Encoder kernel size in samples.
    segment_ms : float
        segSI-SDR segment length in ms (50 % overlap).
    activity : torch.Tensor, optional
        Per-sample webrtcvad speech labels of the targets, [B, T, C] (the
        data pipeline's ``s1_vad``, ``s2_vad``); computed from ``targets``
        with the same VAD when omitted. They decide which segments are
        silence (w = 1) or have one active speaker (eq. 20).
    sd_form : str
        ``"printed"`` (eq. 20 as printed) or ``"continuous"``; see
        :func:`~speechbrain_dsn.segmental.signal_dependent_weights`.

    Returns
    -------
    dict
        ``loss`` (scalar total), ``si_sdr_loss`` (scalar, batch mean of eq.
        17), ``complexity`` (scalar eq. 18, zero without utilization) and
        ``weights`` ([B, F] SD weights, or ``None`` for SI weighting or
        without utilization).

    Example
    -------
    >>> targets = torch.randn(2, 4000, 2)
    >>> estimates = targets + 0.01 * torch.randn(2, 4000, 2)
    >>> utilization = torch.full((2, 499), 1.0, requires_grad=True)
    >>> out = dsn_loss(estimates, targets, utilization, levels=(0.125, 1.0))
    >>> sorted(out), out["weights"].shape
    (['complexity', 'loss', 'si_sdr_loss', 'weights'], torch.Size([2, 499]))
    >>> out["loss"].backward()
    >>> bool(utilization.grad.abs().sum() > 0)
    True
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if len(levels) == 0:
        raise ValueError("levels must contain at least one utilization level")
    loss_per_example, reordered = pit_si_sdr(estimates, targets)
    si_sdr_loss = loss_per_example.mean()

    weights = None
    if utilization is None:
        complexity = torch.zeros((), device=estimates.device, dtype=si_sdr_loss.dtype)
    else:
        if utilization.dim() != 2 or utilization.shape[0] != estimates.shape[0]:
            raise ValueError(
                f"expected utilization of shape [{estimates.shape[0]}, frames], got {tuple(utilization.shape)}"
            )
        if weighting == "sd":
            with torch.no_grad():
                seg = segmental_si_sdr(reordered.detach(), targets, sample_rate, segment_ms)
                if activity is None:
                    activity = speech_labels(targets, sample_rate)
                _check_shape(activity, "activity", ("batch", "time", "sources"), targets, "targets")
                active = segment_activity(activity, sample_rate, segment_ms)
                seg_weights = signal_dependent_weights(seg, active, a, b, form=sd_form)
                weights = segments_to_frames(
                    seg_weights,
                    utilization.shape[1],
                    frame_hop,
                    frame_length,
                    sample_rate,
                    segment_ms,
                )
        complexity = complexity_loss(utilization, float(min(levels)), weights)

    return {
        "loss": si_sdr_loss + alpha * complexity,
        "si_sdr_loss": si_sdr_loss,
        "complexity": complexity,
        "weights": weights,
    }
