"""Compute-budget control for a trained DSN (Section V-D, beyond the paper).

A device's budget changes at run time (e.g. with the battery level).  External
gating at one level meets a budget but ignores the input; here the gating
module still decides *where* to spend, and a per-input shift of its logits
decides *how much*: frame t runs at

    k_t(lambda) = argmax_k  R_tk - lambda * u_k

(R: the gate's logits [T, K], u_k the levels).  The average utilization is
non-increasing in lambda, so bisection finds, per input, the largest average
that does not exceed the budget (frames that tie at that lambda are raised
one by one, best first).  lambda = 0 is the model's own gating.

Owns :func:`budget_levels` (logits -> level indices for a budget) and
:class:`SeparationReport` (what each separation call reports).
"""

from dataclasses import dataclass
from typing import Optional

import torch

from .levels import Levels

__all__ = ["SeparationReport", "budget_levels"]


@dataclass
class SeparationReport:
    """What a separation used: per-frame utilization, its average and the effective cost.

    ``utilization`` [B, T] per encoder frame; ``average`` [B]; ``gmacs`` [B]:
    GMAC/s of the separator at that track (the frame-share-weighted mean of
    the per-level costs, plus the gating module when it ran); ``budget``: the
    requested average, if any.
    """

    utilization: torch.Tensor
    average: torch.Tensor
    gmacs: torch.Tensor
    budget: Optional[float] = None
    mode: str = "internal"


def _mean_utilization(logits, values, shift):
    # [B, T] level values chosen at the given per-item shifts [B]
    index = (logits - shift[:, None, None] * values).argmax(-1)
    return values[index].mean(-1), index


def budget_levels(logits: torch.Tensor, levels: Levels, budget: float, iterations: int = 50) -> torch.Tensor:
    """Level indices [B, T] whose average utilization per item is the largest one <= ``budget``.

    Arguments
    ---------
    logits : torch.Tensor
        Gate logits [B, T, K] (``GatingModule.logits``).
    levels : Levels
        The model's levels.
    budget : float
        Target average utilization in (0, 1].  Below the lowest level every
        frame runs at the lowest level; above the highest, at the highest.
    iterations : int
        Bisection steps.

    Example
    -------
    >>> logits = torch.tensor([[[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]]])
    >>> levels = Levels([0.25, 1.0])
    >>> budget_levels(logits, levels, 1.0).tolist()        # the whole budget: every frame at the top
    [[1, 1, 1, 1]]
    >>> budget_levels(logits, levels, 0.625).tolist()      # half of the frames: the most confident stay high
    [[0, 0, 1, 1]]
    """
    if not 0.0 < float(budget) <= 1.0:
        raise ValueError(f"budget must be an average utilization in (0, 1], got {budget}")
    if logits.dim() != 3 or logits.shape[-1] != len(levels):
        raise ValueError(f"expected logits [batch, frames, {len(levels)}], got {tuple(logits.shape)}")
    logits = logits.detach().double()
    values = levels.tensor(logits.device).double()
    B = logits.shape[0]
    # beyond +-span every frame picks the lowest / highest level
    gap = float((values[1:] - values[:-1]).min()) if len(values) > 1 else 1.0
    span = float(logits.max() - logits.min()) / gap + 1.0
    lo = torch.full((B,), -span, dtype=torch.float64, device=logits.device)
    hi = torch.full((B,), span, dtype=torch.float64, device=logits.device)
    # invariant: mean(lo) > budget >= mean(hi), or the budget lies outside the reachable range
    for _ in range(iterations):
        mid = (lo + hi) / 2
        above = _mean_utilization(logits, values, mid)[0] > budget
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    # hi never overspends; the frames that flip between hi and lo (near-ties of the gate, e.g.
    # identical silent frames) are raised one by one, best score first, while the budget allows
    _, index = _mean_utilization(logits, values, hi)
    index_lo = _mean_utilization(logits, values, lo)[1]
    T = logits.shape[1]
    for b in range(B):
        flip = torch.nonzero(index_lo[b] != index[b]).squeeze(1)
        if flip.numel() == 0:
            continue
        score = logits[b] - hi[b] * values
        gain = score[flip, index_lo[b, flip]] - score[flip, index[b, flip]]
        order = flip[torch.sort(gain, descending=True, stable=True).indices]
        room = budget * T - float(values[index[b]].sum())
        cost = torch.cumsum(values[index_lo[b, order]] - values[index[b, order]], 0)
        take = int((cost <= room + 1e-9).sum())
        index[b, order[:take]] = index_lo[b, order[:take]]
    return index
