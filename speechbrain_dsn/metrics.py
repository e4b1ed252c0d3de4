"""Separation metrics of the DSN evaluation (Section V of the paper).

This module owns the separation quality of an utterance:

* SI-SDR improvement (SI-SDRi) with PIT, the metric of Figs. 5, 7, 10 and
  Table II (eq. 17 without the sign);
* BSS-eval SDR improvement (SDRi, ``fast_bss_eval``), reported beside it as
  in the SepFormer papers, for comparison with published numbers.

Both take any number of sources C (1 for speech enhancement). The segment
types and their statistics are :mod:`speechbrain_dsn.segment_types`; running
the test sets and writing the reports, :mod:`speechbrain_dsn.evaluation_stage` and
:mod:`speechbrain_dsn.reports`; the figures, :mod:`speechbrain_dsn.plotting`.

Shape letters: B batch, T time samples, C sources.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from speechbrain.nnet.losses import cal_si_snr

from speechbrain_dsn.losses import pit_si_sdr

__all__ = ["sdr_improvement", "si_sdr_improvement"]


def si_sdr_improvement(
    estimates: torch.Tensor, targets: torch.Tensor, mixture: torch.Tensor
) -> Dict[str, torch.Tensor]:
    """SI-SDR and SI-SDR improvement over the mixture, with PIT.

    Arguments
    ---------
    estimates : torch.Tensor
        Separated signals, shape [T, C] or [B, T, C].
    targets : torch.Tensor
        Reference signals, same shape as ``estimates``.
    mixture : torch.Tensor
        Input mixture, shape [T] or [B, T].

    Returns
    -------
    dict
        ``si_sdr`` and ``si_sdri`` (mean over sources, shape [B] or []) and
        ``si_sdr_per_source`` and ``si_sdri_per_source`` (shape [B, C] or
        [C]), in dB, with sources in the order of ``targets``; and
        ``estimates_reordered``, the estimates in that order (shape of
        ``estimates``).

    Example
    -------
    >>> targets = torch.randn(8000, 2)
    >>> mixture = targets.sum(-1)
    >>> estimates = targets.flip(-1) + 0.1 * torch.randn(8000, 2)
    >>> out = si_sdr_improvement(estimates, targets, mixture)
    >>> out["si_sdri"].shape, out["si_sdri_per_source"].shape
    (torch.Size([]), torch.Size([2]))
    >>> 15 < out["si_sdri"].item() < 25
    True
    """
    unbatched = estimates.dim() == 2
    if unbatched:
        estimates, targets, mixture = (
            estimates.unsqueeze(0),
            targets.unsqueeze(0),
            mixture.unsqueeze(0),
        )
    if mixture.shape != estimates.shape[:2]:
        raise ValueError(f"expected mixture of shape {tuple(estimates.shape[:2])}, got {tuple(mixture.shape)}")
    with torch.no_grad():
        # [B, T, C]
        _, reordered = pit_si_sdr(estimates, targets)
        baseline = mixture.unsqueeze(-1).expand_as(targets)
        # cal_si_snr takes [T, B, C] and scales its estimate in place.
        # [B, C]
        ref = targets.transpose(0, 1)
        si_sdr = -cal_si_snr(ref, reordered.transpose(0, 1).clone())[0]
        si_sdr_mix = -cal_si_snr(ref, baseline.transpose(0, 1).clone())[0]
    out = {
        "si_sdr_per_source": si_sdr,
        "si_sdri_per_source": si_sdr - si_sdr_mix,
        "estimates_reordered": reordered,
    }
    out["si_sdr"] = out["si_sdr_per_source"].mean(-1)
    out["si_sdri"] = out["si_sdri_per_source"].mean(-1)
    if unbatched:
        out = {key: value[0] for key, value in out.items()}
    return out


def _bss_eval_sdr(estimates: torch.Tensor, targets: torch.Tensor, filter_length: int) -> torch.Tensor:
    """BSS-eval SDR of each estimate against the target of the same index.

    Shapes [B, T, C] -> [B, C], float64 on the CPU. A source whose reference is
    silent (all samples below 1e-8 in magnitude) gets NaN: its SDR is undefined
    (the distortion filter's system is singular).
    """
    import fast_bss_eval  # imported here: only the test stage needs it

    estimates = estimates.detach().to("cpu", torch.float64)
    targets = targets.detach().to("cpu", torch.float64)
    out = torch.full(targets.shape[::2], math.nan, dtype=torch.float64)
    for b in range(targets.shape[0]):
        active = targets[b].abs().amax(0) > 1e-8
        if active.any():
            # [C', T]; the torch backend (fast_bss_eval's numpy one fails under numpy 2).
            # A source's SDR depends only on its own reference, so dropping silent
            # ones leaves the others unchanged.
            args = (targets[b][:, active].T.contiguous(), estimates[b][:, active].T.contiguous())
            try:
                sdr = fast_bss_eval.bss_eval_sources(*args, filter_length=filter_length, compute_permutation=False)[0]
            except RuntimeError as err:
                # torch 2.14 (CPU, MKL): after torch.set_num_threads(1) and back to more threads,
                # torch.linalg.solve fails ("Pivots given to lu_solve ...") until it runs on one
                # thread again; measured here, so retry on one thread.
                if "lu_solve" not in str(err):
                    raise
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    sdr = fast_bss_eval.bss_eval_sources(*args, filter_length=filter_length, compute_permutation=False)[
                        0
                    ]
                finally:
                    torch.set_num_threads(threads)
            out[b, active] = sdr
    return out


def sdr_improvement(
    estimates: torch.Tensor,
    targets: torch.Tensor,
    mixture: torch.Tensor,
    mixture_sdr: Optional[torch.Tensor] = None,
    filter_length: int = 512,
) -> Dict[str, torch.Tensor]:
    """BSS-eval SDR and SDR improvement over the mixture (SDRi).

    SDR is the ``bss_eval_sources`` SDR of ``fast_bss_eval`` (the definition of
    ``mir_eval`` / BSS Eval v3: the reference may be filtered by a
    ``filter_length``-tap filter), and SDRi = SDR(estimate, reference) -
    SDR(mixture, reference). The estimates are **not** permuted here: pass them
    in the order of ``targets``, e.g. the ``estimates_reordered`` of
    :func:`si_sdr_improvement`, so that both metrics score the same assignment.
    (SpeechBrain's recipes let ``bss_eval_sources`` pick its own, SIR-based,
    permutation; the two agree except on very poor separations.)

    A source with a silent reference (every sample below 1e-8 in magnitude)
    has an undefined SDR: its per-source values are NaN and the utterance
    means ``sdr`` / ``sdri`` average the other sources only (NaN when no source
    has a reference).

    Arguments
    ---------
    estimates : torch.Tensor
        Separated signals in target order, shape [T, C] or [B, T, C].
    targets : torch.Tensor
        Reference signals, same shape as ``estimates``.
    mixture : torch.Tensor
        Input mixture, shape [T] or [B, T].
    mixture_sdr : torch.Tensor, optional
        The ``mixture_sdr_per_source`` of an earlier call on the same targets
        and mixture, to skip recomputing it (e.g. once per gating mode).
    filter_length : int
        Length of the allowed distortion filter (BSS Eval's default, 512).

    Returns
    -------
    dict
        ``sdr`` and ``sdri`` (mean over sources, shape [B] or []),
        ``sdr_per_source``, ``sdri_per_source`` and ``mixture_sdr_per_source``
        (shape [B, C] or [C]), in dB, float32 on the CPU.

    Example
    -------
    >>> targets = torch.randn(8000, 2)
    >>> mixture = targets.sum(-1)
    >>> estimates = targets + 0.1 * torch.randn(8000, 2)
    >>> out = sdr_improvement(estimates, targets, mixture)
    >>> out["sdri"].shape, out["sdri_per_source"].shape
    (torch.Size([]), torch.Size([2]))
    >>> 15 < out["sdr"].item() < 25 and 15 < out["sdri"].item() < 25
    True
    >>> sdr_improvement(mixture[:, None].expand(-1, 2), targets, mixture)["sdri"].item()
    0.0
    """
    unbatched = estimates.dim() == 2
    if unbatched:
        estimates, targets, mixture = estimates[None], targets[None], mixture[None]
        if mixture_sdr is not None:
            mixture_sdr = mixture_sdr[None]
    if mixture.shape != estimates.shape[:2] or targets.shape != estimates.shape:
        raise ValueError(
            f"expected targets of shape {tuple(estimates.shape)} and mixture of shape "
            f"{tuple(estimates.shape[:2])}, got {tuple(targets.shape)} and {tuple(mixture.shape)}"
        )
    sdr = _bss_eval_sdr(estimates, targets, filter_length)
    if mixture_sdr is None:
        mixture_sdr = _bss_eval_sdr(mixture.unsqueeze(-1).expand_as(targets), targets, filter_length)
    mixture_sdr = mixture_sdr.to(torch.float64)
    sdri = sdr - mixture_sdr
    out = {
        "sdr_per_source": sdr.float(),
        "sdri_per_source": sdri.float(),
        "mixture_sdr_per_source": mixture_sdr.float(),
        # NaN (silent reference) sources left out; all-NaN rows stay NaN
        "sdr": sdr.nanmean(-1).float(),
        "sdri": sdri.nanmean(-1).float(),
    }
    if unbatched:
        out = {key: value[0] for key, value in out.items()}
    return out
