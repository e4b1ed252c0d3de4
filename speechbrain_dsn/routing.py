"""Per-token routing of utilization levels for the slimmable layers.

A :class:`Route` describes which tokens of a batch of sequences run at which
utilization level (Section III-E).  The sliced execution path groups tokens
by level for the FFN (eq. 16) and packs, for every head group, the frames on
which those heads are active so that attention is computed among them only
(eqs. 13-14).  All bookkeeping is vectorised; a route is built once per
forward pass and layout (intra- or inter-chunk) and shared by every layer.

Shapes: N sequences, M sequence length, K levels, P routed tokens,
Ng packed sequences, L packed length.
"""

import math
from typing import List, Optional, Sequence, Union

import torch

__all__ = ["Route", "check_levels", "level_index", "slim_width"]


def slim_width(utilization: float, full: int) -> int:
    """Returns ``ceil(utilization * full)``, the width kept at a utilization.

    Arguments
    ---------
    utilization : float
        Utilization factor in (0, 1].
    full : int
        Full width (number of heads or neurons).

    Returns
    -------
    int
        The number of units kept.

    Example
    -------
    >>> slim_width(0.125, 8), slim_width(0.5, 1024), slim_width(0.3, 10)
    (1, 512, 3)
    """
    # The tolerance keeps 0.3 * 10 = 3.0000000000000004 from rounding up to 4.
    return max(1, math.ceil(utilization * full - 1e-9))


def check_levels(levels: Sequence[float]) -> tuple:
    """Validates a set of utilization levels and returns it sorted.

    Arguments
    ---------
    levels : sequence of float
        Utilization levels, each in (0, 1], without duplicates.

    Returns
    -------
    tuple of float
        The levels in increasing order.

    Example
    -------
    >>> check_levels([1.0, 0.125, 0.5])
    (0.125, 0.5, 1.0)
    """
    levels = tuple(sorted(float(u) for u in levels))
    if len(levels) == 0:
        raise ValueError("utilization_levels must hold at least one level")
    if any(not 0.0 < u <= 1.0 for u in levels):
        raise ValueError(f"utilization levels must lie in (0, 1], got {levels}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"utilization levels must be distinct, got {levels}")
    return levels


def level_index(utilization: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
    """Maps utilization values to indices into ``levels``, rejecting unknown values.

    Arguments
    ---------
    utilization : torch.Tensor
        Level values, any shape.
    levels : sequence of float
        The sorted utilization levels.

    Returns
    -------
    torch.Tensor
        Long tensor of level indices, same shape as ``utilization``.

    Example
    -------
    >>> level_index(torch.tensor([0.5, 1.0, 0.125]), (0.125, 0.5, 1.0)).tolist()
    [1, 2, 0]
    """
    table = torch.tensor(levels, device=utilization.device)
    dist = (utilization.float()[..., None] - table).abs()
    index = dist.argmin(-1)
    off = dist.min(-1).values > 1e-4
    if bool(off.any()):
        bad = sorted(set(utilization[off].tolist()))[:5]
        raise ValueError(f"utilization values {bad} are not among the levels {tuple(levels)}")
    return index


class _Pack:
    """Tokens of one head group, packed sequence by sequence.

    ``token_idx`` [P] are the flat indices (into N * M) of the active tokens,
    ``slot_idx`` [P] their flat positions in the packed [Ng, L] layout, and
    ``valid`` [Ng, L] marks the packed slots that hold a real token.
    """

    def __init__(self, token_idx, slot_idx, valid):
        self.token_idx = token_idx
        self.slot_idx = slot_idx
        self.valid = valid


class Route:
    """How the tokens of a batch of sequences map onto utilization levels.

    A route is computed once per forward pass for the intra-chunk layout and
    once for the inter-chunk layout, and shared by every layer that sees that
    layout, so the index bookkeeping is paid twice per forward, not per layer.

    Build it with one of the constructors:

    * :meth:`uniform`: every token runs at one level (static networks and
      utterance-level external gating): plain sliced matmuls, no indexing;
    * :meth:`from_levels`: a level index per token (inference);
    * :meth:`from_gates`: straight-through one-hot gates per token (training).

    Example
    -------
    >>> route = Route.from_levels(torch.tensor([[0, 1], [1, 1]]), num_levels=2)
    >>> route.level_tokens[0].tolist(), route.level_tokens[1].tolist()
    ([0], [1, 2, 3])
    >>> route.packs[1].valid.tolist()
    [[True, False], [True, True]]
    >>> Route.from_levels(torch.ones(2, 3, dtype=torch.long), 2).level
    1
    """

    def __init__(self, level=None, level_tokens=None, packs=None, gates=None):
        self.level = level
        self.level_tokens = level_tokens
        self.packs = packs
        self.gates = gates

    @classmethod
    def uniform(cls, level: int) -> "Route":
        """All tokens run at level index ``level``."""
        return cls(level=int(level))

    @classmethod
    def from_gates(cls, gates: torch.Tensor) -> "Route":
        """Masked (training) route from one-hot gates of shape [N, M, K]."""
        if gates.dim() != 3:
            raise ValueError(
                f"expected gates of shape [sequences, time, levels], got {tuple(gates.shape)}"
            )
        return cls(gates=gates)

    @classmethod
    def from_levels(cls, level_index: torch.Tensor, num_levels: int) -> "Route":
        """Sliced route from a level index per token, of shape [N, M]."""
        if level_index.dim() != 2:
            raise ValueError(
                f"expected level indices of shape [sequences, time], got {tuple(level_index.shape)}"
            )
        N, M = level_index.shape
        flat = level_index.reshape(-1)
        counts = torch.bincount(flat, minlength=num_levels).tolist()
        if len(counts) > num_levels:
            raise ValueError(f"level index out of range for {num_levels} levels")
        used = [k for k, c in enumerate(counts) if c > 0]
        if len(used) == 1:
            return cls.uniform(used[0])

        # FFN routing: one group of tokens per level.
        level_tokens = [
            torch.nonzero(flat == k).squeeze(1) if c > 0 else None
            for k, c in enumerate(counts)
        ]

        # Attention routing: head group g is active where level >= g.  Group 0
        # holds the heads that every level keeps, so it is always dense.
        packs: List[Optional[Union[_Pack, str]]] = ["dense"]
        for g in range(1, num_levels):
            active_tokens = sum(counts[g:])
            if active_tokens == 0:
                packs.append(None)
                continue
            if active_tokens == N * M:
                packs.append("dense")
                continue
            # [N, M]
            active = level_index >= g
            per_seq = active.sum(1)
            seqs = torch.nonzero(per_seq).squeeze(1)
            length = int(per_seq.max())
            # A stable sort moves each sequence's active tokens to its front,
            # in time order; slicing to the longest keeps [Ng, L] small.
            order = torch.argsort(
                (~active[seqs]).to(torch.int8), dim=1, stable=True
            )[:, :length]
            valid = torch.arange(length, device=flat.device) < per_seq[seqs, None]
            token_idx = (seqs[:, None] * M + order)[valid]
            slot_idx = torch.nonzero(valid.reshape(-1)).squeeze(1)
            packs.append(_Pack(token_idx, slot_idx, valid))
        return cls(level_tokens=level_tokens, packs=packs)
