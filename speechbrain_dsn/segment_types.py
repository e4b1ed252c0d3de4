"""Segment types of the DSN evaluation: silence, one speaker, overlap (Section V).

This module owns the classification of encoder frames and 96 ms segments by
the number of active sources, from the per-sample webrtcvad speech activity of
``num_spks`` references (two or more active sources are overlap; one source,
speech enhancement, has no overlap type), and what is reported per type: the
share of each utilization level (Figs. 9 and 15) and the statistics of the
segSI-SDR (Figs. 11, 16).

Shape letters: T time samples, F frames (encoder frames or segments).
"""

import math
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch

from speechbrain_dsn.levels import Levels
from speechbrain_dsn.plotting import _to_numpy

__all__ = ["SEGMENT_TYPES", "frame_segment_types", "segment_stats", "segment_type_names", "utilization_share"]

ArrayLike = Union[np.ndarray, torch.Tensor]

# segment type t: t sources active, any number above one counting as overlap
SEGMENT_TYPES = ("silence", "single", "overlap")


def segment_type_names(num_spks: int) -> Tuple[str, ...]:
    """The segment types that mixtures of ``num_spks`` sources have.

    Example
    -------
    >>> segment_type_names(1), segment_type_names(3)
    (('silence', 'single'), ('silence', 'single', 'overlap'))
    """
    if num_spks < 1:
        raise ValueError(f"num_spks must be at least 1, got {num_spks}")
    return SEGMENT_TYPES[: min(num_spks, 2) + 1]


ArrayLike = Union[np.ndarray, torch.Tensor]


def frame_segment_types(
    masks: Sequence[ArrayLike],
    num_frames: int,
    frame_hop: int = 8,
    frame_length: int = 16,
    rule: str = "centre",
) -> ArrayLike:
    """Classifies frames as silence (0), single speaker (1) or overlap (2).

    Frame ``t`` covers samples ``[t * frame_hop, t * frame_hop +
    frame_length)``. With ``rule="centre"`` a source counts as active in a
    frame if it is active at sample ``t * frame_hop + frame_length // 2``
    (the encoder convention of ``losses.segments_to_frames``); with
    ``rule="majority"`` if it is active in more than half of the frame's
    samples, which suits long windows such as 96 ms segments
    (``frame_hop=384, frame_length=768``). Samples past the end of the masks
    count as inactive. Two or more active sources are overlap, so one source
    gives types 0 and 1 only.

    Arguments
    ---------
    masks : sequence of numpy.ndarray or torch.Tensor
        Per-sample speech activity of each reference source, each of shape [T].
    num_frames : int
        Number of frames to classify.
    frame_hop : int
        Frame hop in samples.
    frame_length : int
        Frame length in samples.
    rule : str
        ``"centre"`` or ``"majority"``.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Integer segment type per frame, shape [num_frames]; a LongTensor if
        the first mask is a tensor, else an int64 array.

    Example
    -------
    >>> s1 = np.zeros(80, dtype=bool); s1[16:64] = True
    >>> s2 = np.zeros(80, dtype=bool); s2[40:] = True
    >>> frame_segment_types([s1, s2], num_frames=9)
    array([0, 1, 1, 1, 2, 2, 2, 1, 1])
    >>> frame_segment_types([s1], num_frames=9)
    array([0, 1, 1, 1, 1, 1, 1, 0, 0])
    """
    if rule not in ("centre", "majority"):
        raise ValueError(f"rule must be 'centre' or 'majority', got {rule!r}")
    if len(masks) == 0:
        raise ValueError("expected the activity masks of at least one source, got none")
    arrays = [_to_numpy(m).astype(bool) for m in masks]
    if any(m.ndim != 1 for m in arrays) or len({m.shape for m in arrays}) > 1:
        raise ValueError(f"expected activity masks of one shape [time], got {', '.join(str(m.shape) for m in arrays)}")
    num_samples = arrays[0].shape[0]
    starts = np.arange(num_frames) * frame_hop
    counts = np.zeros(num_frames, dtype=np.int64)
    for mask in arrays:
        if rule == "centre":
            centres = starts + frame_length // 2
            inside = centres < num_samples
            active = np.zeros(num_frames, dtype=bool)
            active[inside] = mask[centres[inside]]
        else:
            # Active samples per frame from a cumulative sum, no frame loop.
            cumsum = np.concatenate([[0], np.cumsum(mask)])
            ends = np.minimum(starts + frame_length, num_samples)
            begins = np.minimum(starts, num_samples)
            active = 2 * (cumsum[ends] - cumsum[begins]) > frame_length
        counts += active
    # [F]: 0, 1, or 2 for any overlap
    types = np.minimum(counts, len(SEGMENT_TYPES) - 1)
    if isinstance(masks[0], torch.Tensor):
        return torch.from_numpy(types)
    return types


def utilization_share(
    utilization: ArrayLike,
    segment_types: ArrayLike,
    levels: Sequence[float],
    names: Sequence[str] = SEGMENT_TYPES,
) -> Dict[str, Dict[float, float]]:
    """Share of each utilization level per segment type (Fig. 9).

    Each utilization value is mapped to its level (``Levels.index``; a value
    that is no level is an error). A segment type with no frames gets NaN
    shares, so that it is not mistaken for a type that never uses a level.

    Arguments
    ---------
    utilization : numpy.ndarray or torch.Tensor
        Utilization per frame, shape [F].
    segment_types : numpy.ndarray or torch.Tensor
        Segment type per frame (0, 1, 2 as in ``SEGMENT_TYPES``), shape [F].
    levels : sequence of float
        Utilization levels.
    names : sequence of str
        The segment types to report, e.g. ``segment_type_names(num_spks)``.

    Returns
    -------
    dict
        ``{segment type name: {level: fraction}}``; fractions of a present
        segment type sum to 1.

    Example
    -------
    >>> u = np.array([0.125, 0.125, 1.0, 1.0, 1.0, 0.125])
    >>> types = np.array([0, 0, 2, 2, 1, 1])
    >>> share = utilization_share(u, types, levels=(0.125, 1.0))
    >>> share["silence"], share["single"], share["overlap"]
    ({0.125: 1.0, 1.0: 0.0}, {0.125: 0.5, 1.0: 0.5}, {0.125: 0.0, 1.0: 1.0})
    """
    util = _to_numpy(utilization).astype(float).reshape(-1)
    types = _to_numpy(segment_types).astype(np.int64).reshape(-1)
    if util.shape != types.shape:
        raise ValueError(f"utilization {util.shape} and segment_types {types.shape} must have the same shape [frames]")
    level_values = np.asarray(Levels(levels).values, dtype=float)
    # [F]
    nearest = Levels(levels).index(torch.from_numpy(util)).numpy()
    # [3, K] frame counts per (segment type, level)
    counts = np.zeros((len(SEGMENT_TYPES), len(level_values)))
    np.add.at(counts, (types, nearest), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / totals
    return {
        name: {float(level): float(shares[i, k]) for k, level in enumerate(levels)}
        for i, name in enumerate(SEGMENT_TYPES)
        if name in names
    }


def segment_stats(
    seg_values: ArrayLike, seg_types: ArrayLike, names: Sequence[str] = SEGMENT_TYPES
) -> Dict[str, Dict[str, float]]:
    """Summary of segSI-SDR values per segment type (Fig. 11).

    Arguments
    ---------
    seg_values : numpy.ndarray or torch.Tensor
        segSI-SDR per segment (dB), any shape.
    seg_types : numpy.ndarray or torch.Tensor
        Segment type (0, 1, 2) per segment, same shape.
    names : sequence of str
        The segment types to report, e.g. ``segment_type_names(num_spks)``.

    Returns
    -------
    dict
        ``{segment type name: {"mean", "median", "q1", "q3", "count"}}``;
        statistics of an absent type are NaN with count 0.

    Example
    -------
    >>> stats = segment_stats(np.array([10.0, 20.0, 30.0, 5.0]), np.array([1, 1, 1, 2]))
    >>> stats["single"]
    {'mean': 20.0, 'median': 20.0, 'q1': 15.0, 'q3': 25.0, 'count': 3}
    >>> stats["silence"]["count"], math.isnan(stats["silence"]["mean"])
    (0, True)
    """
    values = _to_numpy(seg_values).astype(float).reshape(-1)
    types = _to_numpy(seg_types).astype(np.int64).reshape(-1)
    if values.shape != types.shape:
        raise ValueError(f"seg_values {values.shape} and seg_types {types.shape} must have the same number of elements")
    stats = {}
    for index, name in enumerate(SEGMENT_TYPES):
        if name not in names:
            continue
        chosen = values[types == index]
        if chosen.size == 0:
            stats[name] = dict.fromkeys(("mean", "median", "q1", "q3"), math.nan)
            stats[name]["count"] = 0
            continue
        q1, median, q3 = np.percentile(chosen, [25, 50, 75])
        stats[name] = {
            "mean": float(chosen.mean()),
            "median": float(median),
            "q1": float(q1),
            "q3": float(q3),
            "count": int(chosen.size),
        }
    return stats
