"""Per-token routing of utilization levels for the slimmable layers.

A :class:`Route` describes which tokens of a batch of sequences run at which
utilization level (Section III-E).  The sliced execution path works on the
tokens in *level order*: a stable sort by level makes the tokens of each level
a contiguous block, and the tokens on which head group g is active (level
>= g) a contiguous suffix.  The FFN (eq. 16), the q, k, v projections and the
output projections (eqs. 7, 15) then run on plain row slices, with no
gathers or scatters; only attention (eqs. 13-14) needs the tokens back in
sequence order, packed per sequence for each head group, which costs one
gather in and one gather out.  All bookkeeping is vectorised; a route is
built once per forward pass and layout (intra- or inter-chunk) and shared by
every layer.

Shapes: N sequences, M sequence length, K levels, P routed tokens,
Ng packed sequences, L packed length, F features.
"""

import math
from typing import List, Optional, Sequence, Union

import torch

__all__ = ["Route", "check_levels", "column_slice_t", "level_index", "slim_width"]


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


def column_slice_t(weight: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``weight[:, lo:hi].t()``, the right operand of ``rows @ W[:, lo:hi].T``.

    An output projection at a reduced width uses only some input columns of
    its weight.  A strict slice is returned as a contiguous copy
    ([hi - lo, out_features], under 1 MiB in the paper configuration): MKL's
    GEMM runs the narrow products of the sliced path faster on it than on
    the strided view (about 5 % less masker time at U = 0.125 on the 2-core
    benchmark machine, same numbers).  The whole weight is returned as a
    view, where the copy would cost a pass over the weight and gain nothing.

    Arguments
    ---------
    weight : torch.Tensor
        Weight of shape [out_features, in_features].
    lo, hi : int
        The input columns used, ``lo:hi``.

    Returns
    -------
    torch.Tensor
        Tensor of shape [hi - lo, out_features] equal to ``weight[:, lo:hi].t()``.

    Example
    -------
    >>> w = torch.arange(6.0).view(2, 3)
    >>> column_slice_t(w, 1, 3).tolist()
    [[1.0, 4.0], [2.0, 5.0]]
    >>> column_slice_t(w, 0, 3).is_contiguous()   # the whole weight: a view
    False
    """
    cols = weight[:, lo:hi]
    if hi - lo == weight.shape[1]:
        return cols.t()
    return cols.t().contiguous()


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
    in time order, ``slot_idx`` [P] their flat positions in the packed
    [Ng, L] layout, and ``valid`` [Ng, L] marks the packed slots that hold a
    real token.  In level order the active tokens are rows ``start:`` of the
    sorted tokens; ``gather`` [Ng * L] maps each packed slot to its row in
    that suffix (padded slots repeat row 0, so they hold finite values) and
    ``scatter`` [P] maps each row of the suffix to its packed slot.
    """

    def __init__(self, token_idx, slot_idx, valid, start=0, gather=None, scatter=None):
        self.token_idx = token_idx
        self.slot_idx = slot_idx
        self.valid = valid
        self.start = start
        self.gather = gather
        self.scatter = scatter


class Route:
    """How the tokens of a batch of sequences map onto utilization levels.

    A route is computed once per forward pass for the intra-chunk layout and
    once for the inter-chunk layout, and shared by every layer that sees that
    layout, so the index bookkeeping is paid twice per forward, not per layer.

    Build it with one of the constructors:

    * :meth:`uniform`: every token runs at one level (static networks and
      utterance-level external gating): plain sliced matmuls, no indexing;
    * :meth:`from_levels`: a level index per token (inference): the
      sliced layers work on the tokens in level order (:meth:`sort`);
    * :meth:`from_gates`: straight-through one-hot gates per token (training).

    A per-token route also holds the level order: ``order`` (flat token index
    of each row), its inverse ``rank``, ``bounds`` (level k owns rows
    ``bounds[k]:bounds[k + 1]``) and, per head group, a pack (``packs[g]``:
    ``"dense"``, None when no token uses the group, or a ``_Pack``; groups
    with the same active tokens share one pack object).

    Example
    -------
    >>> route = Route.from_levels(torch.tensor([[0, 1], [1, 1]]), num_levels=2)
    >>> route.order.tolist(), route.bounds         # tokens in level order
    ([0, 1, 2, 3], [0, 1, 4])
    >>> route.packs[1].valid.tolist()
    [[True, False], [True, True]]
    >>> Route.from_levels(torch.ones(2, 3, dtype=torch.long), 2).level
    1
    """

    def __init__(self, level=None, packs=None, gates=None, order=None, rank=None, bounds=None, shape=None):
        self.level = level
        self.packs = packs
        self.gates = gates
        # order [P]: flat token index of each row in level order; rank [P]:
        # the inverse permutation; bounds: level k owns rows bounds[k]:bounds[k+1].
        self.order = order
        self.rank = rank
        self.bounds = bounds
        # (N, M) of the routed tokens
        self.shape = shape

    @property
    def is_routed(self) -> bool:
        """True for a per-token route of the sliced path (tokens in level order)."""
        return self.order is not None

    def sort(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [N, M, F] -> rows [P, F] in level order."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.order)

    def unsort(self, rows: torch.Tensor, shape) -> torch.Tensor:
        """Rows [P, F] in level order -> tokens of the given shape [N, M, F]."""
        return rows.index_select(0, self.rank).view(shape)

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

        # Level order: a stable sort keeps time order within each level.
        order = torch.argsort(flat, stable=True)
        bounds = [0]
        for c in counts:
            bounds.append(bounds[-1] + c)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(N * M, device=flat.device)
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
            if counts[g - 1] == 0:
                # Same active tokens as group g - 1: share the pack, so the
                # layers run both head groups as one.
                packs.append(packs[-1])
                continue
            # [N, M]
            active = level_index >= g
            per_seq = active.sum(1)
            seqs = torch.nonzero(per_seq).squeeze(1)
            length = int(per_seq.max())
            # A stable sort moves each sequence's active tokens to its front,
            # in time order; slicing to the longest keeps [Ng, L] small.
            time_order = torch.argsort((~active[seqs]).to(torch.int8), dim=1, stable=True)[:, :length]
            valid = torch.arange(length, device=flat.device) < per_seq[seqs, None]
            token_idx = (seqs[:, None] * M + time_order)[valid]
            slot_idx = torch.nonzero(valid.reshape(-1)).squeeze(1)
            # rows of the level-order suffix bounds[g]: <-> packed slots
            row = rank[token_idx] - bounds[g]
            gather = torch.zeros(valid.numel(), dtype=torch.long, device=flat.device)
            gather[slot_idx] = row
            scatter = torch.empty_like(slot_idx)
            scatter[row] = slot_idx
            packs.append(_Pack(token_idx, slot_idx, valid, bounds[g], gather, scatter))
        return cls(packs=packs, order=order, rank=rank, bounds=bounds, shape=(N, M))
