"""Utilization levels and per-frame utilization tracks (Sections III-B, III-E).

Owns the one mapping between utilization values U and level indices k
(:class:`Levels`), the width a level keeps (:func:`slim_width`, ceil(U H) heads
and ceil(U D) neurons) and the chunking of a per-frame track U [B, T] into the
chunk layout of the features, U' [B, C, S] (:func:`chunk_track`).  Every other
module asks these for levels, widths and chunked tracks.
"""

import math
from typing import Iterator, List, Sequence, Union

import torch
import torch.nn.functional as F

__all__ = ["Levels", "chunk_track", "slim_width"]


def slim_width(utilization: float, full: int) -> int:
    """Returns ``ceil(utilization * full)``, the width kept at a utilization.

    Example
    -------
    >>> slim_width(0.125, 8), slim_width(0.5, 1024), slim_width(0.3, 10)
    (1, 512, 3)
    """
    # The tolerance keeps 0.3 * 10 = 3.0000000000000004 from rounding up to 4.
    return max(1, math.ceil(utilization * full - 1e-9))


class Levels:
    """A sorted set of utilization levels and the value <-> index mapping.

    Arguments
    ---------
    values : sequence of float
        Utilization levels, each in (0, 1], without duplicates (any order).

    Example
    -------
    >>> levels = Levels([1.0, 0.125, 0.5])
    >>> levels.values, len(levels), levels.top
    ((0.125, 0.5, 1.0), 3, 2)
    >>> levels.index(0.5), levels.index(torch.tensor([1.0, 0.125])).tolist()
    (1, [2, 0])
    >>> levels.widths(8)
    [1, 4, 8]
    >>> levels.index(0.3)
    Traceback (most recent call last):
    ...
    ValueError: utilization values [0.3] are not among the levels (0.125, 0.5, 1.0)
    """

    #: A value matches a level when it is within this distance.
    TOLERANCE = 1e-4

    def __init__(self, values: Union["Levels", Sequence[float]]):
        if isinstance(values, Levels):
            values = values.values
        values = tuple(sorted(float(u) for u in values))
        if not values:
            raise ValueError("utilization_levels must hold at least one level")
        if any(not 0.0 < u <= 1.0 for u in values):
            raise ValueError(f"utilization levels must lie in (0, 1], got {values}")
        if len(set(values)) != len(values):
            raise ValueError(f"utilization levels must be distinct, got {values}")
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[float]:
        return iter(self.values)

    def __getitem__(self, index: int) -> float:
        return self.values[index]

    def __eq__(self, other) -> bool:
        return isinstance(other, Levels) and other.values == self.values

    def __repr__(self) -> str:
        return f"Levels({list(self.values)})"

    @property
    def top(self) -> int:
        """Index of the highest level (full width of this network)."""
        return len(self.values) - 1

    @property
    def is_static(self) -> bool:
        """True for a single level (a static network)."""
        return len(self.values) == 1

    def tensor(self, device=None) -> torch.Tensor:
        """The level values as a float tensor [K]."""
        return torch.tensor(self.values, device=device)

    def index(self, utilization: Union[float, torch.Tensor]):
        """Level index of a value (an ``int``) or of each value of a tensor (a long tensor).

        A value that is not a level (within :attr:`TOLERANCE`) is a ``ValueError``.
        """
        scalar = not torch.is_tensor(utilization)
        u = torch.as_tensor(utilization, dtype=torch.float32)
        dist = (u[..., None] - self.tensor(u.device)).abs()
        index = dist.argmin(-1)
        off = ~(dist.min(-1).values <= self.TOLERANCE)  # NaN is off too
        if bool(off.any()):
            bad = sorted(set(round(v, 6) for v in u[off].tolist()))[:5]
            raise ValueError(f"utilization values {bad} are not among the levels {self.values}")
        return int(index) if scalar else index

    def widths(self, full: int) -> List[int]:
        """Units kept at each level out of ``full`` (heads or neurons)."""
        return [slim_width(u, full) for u in self.values]


def chunk_track(track: torch.Tensor, K: int) -> torch.Tensor:
    """Chunks a per-frame track [B, D, T] into [B, D, C, S] (C = ``K``).

    The same 50 % overlap segmentation as ``Dual_Path_Model._Segmentation``
    applies to the features, except that padded positions repeat the nearest
    real frame instead of zeros: padded positions run at their neighbour's
    level, so a whole-input level also covers the padding (as in a stock
    SepFormer), and every execution path agrees on U'.

    Example
    -------
    >>> chunk_track(torch.arange(5.0).view(1, 1, 5), 4)[0, 0].T.tolist()
    [[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 4.0], [4.0, 4.0, 4.0, 4.0]]
    """
    B, D, T = track.shape
    P = K // 2
    gap = K - (P + T % K) % K
    # [B, D, P + T + gap + P]
    padded = F.pad(track, (P, gap + P), mode="replicate")
    first = padded[..., :-P].reshape(B, D, -1, K)
    second = padded[..., P:].reshape(B, D, -1, K)
    # interleave the two shifted chunkings: [B, D, C, S]
    return torch.cat([first, second], dim=3).reshape(B, D, -1, K).transpose(2, 3)
