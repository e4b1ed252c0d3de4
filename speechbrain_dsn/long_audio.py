"""Separation of recordings of any length, in overlapping windows.

A single SepFormer pass is capped in length (the inter-chunk positional
encoding holds 2500 chunks, about 62 s of 8 kHz audio at K = 50) and its
memory grows with the length.  :func:`separate_in_windows` cuts the mixture
into windows of ``window`` samples that overlap by ``overlap`` samples,
separates one window at a time, and

* keeps each speaker on the same output across windows: a window's outputs
  are reordered by their correlation with the previous window's outputs on
  the shared samples (the permutation with the largest summed normalised
  correlation), as Asteroid's ``LambdaOverlapAdd`` does (it sums the
  unnormalised products);
* cross-fades the shared samples linearly;
* yields finished pieces as soon as they are final, so memory stays flat in
  the length when the caller writes them out (the CLI does).

The per-frame utilization of each window is stitched the same way (each
output sample's frames come from the window that produced it), so budget
and utilization reports cover the whole recording.
"""

import itertools
import math
from typing import Callable, Iterator, List, Tuple

import torch

__all__ = ["best_permutation", "separate_in_windows", "window_starts"]


def window_starts(length: int, window: int, overlap: int) -> List[int]:
    """Start samples of the windows covering ``length`` samples.

    Example
    -------
    >>> window_starts(100, 40, 10), window_starts(30, 40, 10)
    ([0, 30, 60], [0])
    """
    if not 0 <= overlap < window:
        raise ValueError(f"the overlap ({overlap}) must be shorter than the window ({window})")
    if length <= window:
        return [0]
    hop = window - overlap
    count = math.ceil((length - window) / hop) + 1
    return [min(i * hop, length - window) for i in range(count)]


def best_permutation(previous: torch.Tensor, current: torch.Tensor) -> Tuple[int, ...]:
    """Order of ``current``'s sources [N, S] that best continues ``previous`` [N, S].

    Example
    -------
    >>> a = torch.randn(100, 2)
    >>> best_permutation(a, a.flip(-1))
    (1, 0)
    """
    prev = previous - previous.mean(0)
    cur = current - current.mean(0)
    # [S, S] normalised correlation of previous source i with current source j
    corr = (prev.T @ cur) / (prev.norm(dim=0)[:, None] * cur.norm(dim=0)[None, :]).clamp_min(1e-8)
    S = corr.shape[0]
    return max(itertools.permutations(range(S)), key=lambda p: float(sum(corr[i, p[i]] for i in range(S))))


def separate_in_windows(
    separate: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]],
    mix: torch.Tensor,
    window: int,
    overlap: int,
    frame_hop: int,
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Yields (estimate piece [n, S], utilization piece [frames]) in time order.

    Arguments
    ---------
    separate : callable
        ``separate(window_mix [1, W]) -> (estimates [W, S], utilization [frames])``.
    mix : torch.Tensor
        The mixture [L].
    window, overlap : int
        Window length and the overlap of consecutive windows, in samples.
    frame_hop : int
        Encoder hop: frame f of a window starts at sample f * frame_hop.

    The pieces concatenate to [L, S] and to about L / frame_hop frames.

    Example
    -------
    >>> mix = torch.randn(1000)
    >>> identity = lambda w: (torch.stack([w[0], -w[0]], -1), torch.ones(w.shape[-1] // 10))
    >>> pieces = list(separate_in_windows(identity, mix, 300, 50, 10))
    >>> est = torch.cat([p for p, _ in pieces])
    >>> torch.allclose(est[:, 0], mix), sum(len(u) for _, u in pieces)
    (True, 100)
    """
    length = mix.shape[-1]
    starts = window_starts(length, window, overlap)
    pending = None  # previous window's estimate on the samples it shares with the next window
    for i, start in enumerate(starts):
        end = min(start + window, length)
        est, track = separate(mix[None, start:end])
        if pending is not None:
            shared_prev = pending.shape[0]
            est = est[:, list(best_permutation(pending, est[:shared_prev]))]
            ramp = torch.linspace(0.0, 1.0, shared_prev + 2, dtype=est.dtype, device=est.device)[1:-1, None]
            est = torch.cat([pending * (1 - ramp) + est[:shared_prev] * ramp, est[shared_prev:]])
        shared_next = end - starts[i + 1] if i + 1 < len(starts) else 0
        # local samples [0, keep) are final: global [start, next start); the frames that
        # start there come from this window too (the last window yields all of its frames)
        keep = (end - start) - shared_next
        frames = len(track) if shared_next == 0 else math.ceil(keep / frame_hop)
        yield est[:keep], track[:frames]
        pending = est[keep:] if shared_next > 0 else None
