"""Per-token routing of utilization levels for the sliced engine.

A :class:`Route` says which tokens of a batch of sequences run at which level.
It is built once per forward pass and layout (intra- or inter-chunk) and
shared by every layer of that layout, so the index bookkeeping is paid twice
per forward pass, not once per layer.

The routed path works on the tokens in *level order*: a stable sort by level
makes the tokens of each level a contiguous block of rows, and the tokens on
which head group g is active (level >= g) a contiguous suffix.  The FFN
(eq. 16), the q, k, v projections and the output projections (eqs. 7, 15) then
run on plain row slices, with no gathers or scatters; only attention
(eqs. 13-14) needs the tokens back in sequence order, packed per sequence for
each head group (:class:`Pack`), which costs one gather in and one gather out.

Shapes: N sequences, M sequence length, K levels, P routed tokens,
Ng packed sequences, L packed length, F features.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

__all__ = ["Pack", "Route"]


@dataclass(frozen=True, eq=False)
class Pack:
    """The tokens of one head group, packed sequence by sequence for attention.

    In level order the group's active tokens are rows ``start:``.  ``gather``
    [Ng * L] maps each packed slot to its row in that suffix (padded slots
    repeat row 0, so they hold finite values) and ``scatter`` [P_g] maps each
    row of the suffix back to its slot.  ``valid`` [Ng, L] marks the slots
    that hold a token (None: every slot does, the pack is the original
    sequences).  ``token_idx`` and ``slot_idx`` are the flat token indices
    (into N * M) in time order and their slots (for tests and inspection).
    """

    start: int
    gather: torch.Tensor
    scatter: torch.Tensor
    shape: Tuple[int, int]
    valid: Optional[torch.Tensor] = None
    token_idx: Optional[torch.Tensor] = None
    slot_idx: Optional[torch.Tensor] = None

    @property
    def key_mask(self) -> Optional[torch.Tensor]:
        """Boolean attention mask [Ng, 1, 1, L] (True: attend), or None."""
        return None if self.valid is None else self.valid[:, None, None, :]


@dataclass(frozen=True, eq=False)
class Route:
    """How the tokens of a batch of sequences map onto utilization levels.

    Either *uniform* (``level`` set: every token at one level; plain sliced
    matmuls, no indexing) or *routed* (a level per token, in level order):
    ``order`` [P] is the flat token index of each row, ``rank`` its inverse,
    ``bounds`` the row ranges of the levels (level k owns rows
    ``bounds[k]:bounds[k + 1]``), ``shape`` (N, M), and ``packs[g]`` the
    attention pack of head group g (None when no token uses the group; groups
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

    level: Optional[int] = None
    order: Optional[torch.Tensor] = None
    rank: Optional[torch.Tensor] = None
    bounds: Optional[List[int]] = None
    shape: Optional[Tuple[int, int]] = None
    packs: Optional[List[Optional[Pack]]] = None

    @property
    def is_routed(self) -> bool:
        """True for a per-token route (tokens in level order)."""
        return self.level is None

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
    def from_levels(cls, level_index: torch.Tensor, num_levels: int) -> "Route":
        """Route from a level index per token [N, M]; uniform if only one level is used."""
        if level_index.dim() != 2:
            raise ValueError(f"expected level indices of shape [sequences, time], got {tuple(level_index.shape)}")
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
        # Head group 0 holds the heads every level keeps: all tokens, as the
        # original sequences.
        dense = Pack(start=0, gather=rank, scatter=order, shape=(N, M))
        packs: List[Optional[Pack]] = [dense]
        for g in range(1, num_levels):
            active_tokens = sum(counts[g:])
            if active_tokens == 0:
                packs.append(None)
            elif active_tokens == N * M:
                packs.append(dense)
            elif counts[g - 1] == 0:
                # same active tokens as group g - 1: share the pack, so the
                # layers run both head groups as one
                packs.append(packs[-1])
            else:
                packs.append(_pack(level_index >= g, rank, bounds[g]))
        return cls(order=order, rank=rank, bounds=bounds, shape=(N, M), packs=packs)


def _pack(active: torch.Tensor, rank: torch.Tensor, start: int) -> Pack:
    """Packs the ``active`` [N, M] tokens per sequence; rows ``start:`` in level order."""
    M = active.shape[1]
    per_seq = active.sum(1)
    seqs = torch.nonzero(per_seq).squeeze(1)
    length = int(per_seq.max())
    # A stable sort moves each sequence's active tokens to its front, in time
    # order; slicing to the longest keeps [Ng, L] small.
    time_order = torch.argsort((~active[seqs]).to(torch.int8), dim=1, stable=True)[:, :length]
    valid = torch.arange(length, device=active.device) < per_seq[seqs, None]
    token_idx = (seqs[:, None] * M + time_order)[valid]
    slot_idx = torch.nonzero(valid.reshape(-1)).squeeze(1)
    # rows of the level-order suffix <-> packed slots
    row = rank[token_idx] - start
    gather = torch.zeros(valid.numel(), dtype=torch.long, device=active.device)
    gather[slot_idx] = row
    scatter = torch.empty_like(slot_idx)
    scatter[row] = slot_idx
    return Pack(start, gather, scatter, tuple(valid.shape), valid, token_idx, slot_idx)
