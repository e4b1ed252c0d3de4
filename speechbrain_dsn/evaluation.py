"""Evaluation helpers for the DSN recipe (Section V of the paper).

* SI-SDR improvement (SI-SDRi) with PIT, the metric of Figs. 5, 7, 10 and
  Table II (eq. 17 without the sign);
* BSS-eval SDR improvement (SDRi, ``fast_bss_eval``), reported beside it as
  in the SepFormer papers, for comparison with published numbers;
* per-frame segment types (silence / single speaker / overlap) from speech
  activity masks, the share of each utilization level per segment type
  (Figs. 9 and 15) and segSI-SDR statistics per segment type (Figs. 11, 16);
* grouping of per-utterance results, atomic CSV writing.

The figures (``plot_utilization``, ``plot_tradeoff``) live in
``speechbrain_dsn.plotting`` and are re-exported here.

Shape letters: B batch, T time samples, C sources, F encoder frames.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from speechbrain.nnet.losses import cal_si_snr

from speechbrain_dsn.losses import pit_si_sdr
from speechbrain_dsn.plotting import _to_numpy, plot_tradeoff, plot_utilization

__all__ = [
    "SEGMENT_TYPES",
    "frame_segment_types",
    "plot_tradeoff",
    "plot_utilization",
    "sdr_improvement",
    "segment_stats",
    "si_sdr_improvement",
    "summarize",
    "utilization_share",
    "write_csv",
]

SEGMENT_TYPES = ("silence", "single", "overlap")

ArrayLike = Union[np.ndarray, torch.Tensor]


def frame_segment_types(
    s1_active: ArrayLike,
    s2_active: ArrayLike,
    num_frames: int,
    frame_hop: int = 8,
    frame_length: int = 16,
    rule: str = "centre",
) -> ArrayLike:
    """Classifies frames as silence (0), single speaker (1) or overlap (2).

    Frame ``t`` covers samples ``[t * frame_hop, t * frame_hop +
    frame_length)``. With ``rule="centre"`` a speaker counts as active in a
    frame if it is active at sample ``t * frame_hop + frame_length // 2``
    (the encoder convention of ``losses.segments_to_frames``); with
    ``rule="majority"`` if it is active in more than half of the frame's
    samples, which suits long windows such as 96 ms segments
    (``frame_hop=384, frame_length=768``). Samples past the end of the masks
    count as inactive.

    Arguments
    ---------
    s1_active : numpy.ndarray or torch.Tensor
        Per-sample speech activity of the first reference source, shape [T].
    s2_active : numpy.ndarray or torch.Tensor
        Per-sample speech activity of the second reference source, shape [T].
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
        ``s1_active`` is a tensor, else an int64 array.

    Example
    -------
    >>> s1 = np.zeros(80, dtype=bool); s1[16:64] = True
    >>> s2 = np.zeros(80, dtype=bool); s2[40:] = True
    >>> frame_segment_types(s1, s2, num_frames=9)
    array([0, 1, 1, 1, 2, 2, 2, 1, 1])
    """
    if rule not in ("centre", "majority"):
        raise ValueError(f"rule must be 'centre' or 'majority', got {rule!r}")
    masks = [_to_numpy(m).astype(bool) for m in (s1_active, s2_active)]
    if any(m.ndim != 1 for m in masks) or masks[0].shape != masks[1].shape:
        raise ValueError(
            "expected two activity masks of shape [time], got "
            f"{masks[0].shape} and {masks[1].shape}"
        )
    num_samples = masks[0].shape[0]
    starts = np.arange(num_frames) * frame_hop
    counts = np.zeros(num_frames, dtype=np.int64)
    for mask in masks:
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
    if isinstance(s1_active, torch.Tensor):
        return torch.from_numpy(counts)
    return counts


def utilization_share(
    utilization: ArrayLike,
    segment_types: ArrayLike,
    levels: Sequence[float],
) -> Dict[str, Dict[float, float]]:
    """Share of each utilization level per segment type (Fig. 9).

    Each utilization value is assigned to the nearest level. A segment type
    with no frames gets NaN shares, so that it is not mistaken for a type
    that never uses a level.

    Arguments
    ---------
    utilization : numpy.ndarray or torch.Tensor
        Utilization per frame, shape [F].
    segment_types : numpy.ndarray or torch.Tensor
        Segment type per frame (0, 1, 2 as in ``SEGMENT_TYPES``), shape [F].
    levels : sequence of float
        Utilization levels.

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
        raise ValueError(
            f"utilization {util.shape} and segment_types {types.shape} must "
            "have the same shape [frames]"
        )
    level_values = np.asarray(levels, dtype=float)
    # [F]
    nearest = np.abs(util[:, None] - level_values[None, :]).argmin(axis=1)
    # [3, K] frame counts per (segment type, level)
    counts = np.zeros((len(SEGMENT_TYPES), len(level_values)))
    np.add.at(counts, (types, nearest), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / totals
    return {
        name: {float(level): float(shares[i, k]) for k, level in enumerate(levels)}
        for i, name in enumerate(SEGMENT_TYPES)
    }


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
        raise ValueError(
            f"expected mixture of shape {tuple(estimates.shape[:2])}, "
            f"got {tuple(mixture.shape)}"
        )
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
                    sdr = fast_bss_eval.bss_eval_sources(*args, filter_length=filter_length,
                                                         compute_permutation=False)[0]
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


def segment_stats(
    seg_values: ArrayLike, seg_types: ArrayLike
) -> Dict[str, Dict[str, float]]:
    """Summary of segSI-SDR values per segment type (Fig. 11).

    Arguments
    ---------
    seg_values : numpy.ndarray or torch.Tensor
        segSI-SDR per segment (dB), any shape.
    seg_types : numpy.ndarray or torch.Tensor
        Segment type (0, 1, 2) per segment, same shape.

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
        raise ValueError(
            f"seg_values {values.shape} and seg_types {types.shape} must have "
            "the same number of elements"
        )
    stats = {}
    for index, name in enumerate(SEGMENT_TYPES):
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


def summarize(
    rows: Iterable[Mapping],
    group_by: Sequence[str] = ("condition", "gating"),
    metrics: Sequence[str] = ("si_sdri", "avg_utilization", "gmacs"),
) -> List[dict]:
    """Mean of each metric per group of per-utterance rows.

    Arguments
    ---------
    rows : iterable of dict
        Per-utterance results; each holds every ``group_by`` key.
    group_by : sequence of str
        Keys whose values define a group.
    metrics : sequence of str
        Keys to average. Missing or ``None`` values are skipped; a metric
        without values in a group is NaN.

    Returns
    -------
    list of dict
        One row per group, in order of first appearance: the group keys,
        each metric's mean and ``count`` (number of rows in the group).

    Example
    -------
    >>> rows = [
    ...     {"condition": "ov100", "gating": "internal", "si_sdri": 18.0},
    ...     {"condition": "ov100", "gating": "internal", "si_sdri": 20.0},
    ...     {"condition": "ov25", "gating": "internal", "si_sdri": 22.0},
    ... ]
    >>> summarize(rows, metrics=("si_sdri",))
    [{'condition': 'ov100', 'gating': 'internal', 'si_sdri': 19.0, 'count': 2},
     {'condition': 'ov25', 'gating': 'internal', 'si_sdri': 22.0, 'count': 1}]
    """
    groups: Dict[tuple, List[Mapping]] = {}
    for index, row in enumerate(rows):
        missing = [key for key in group_by if key not in row]
        if missing:
            raise ValueError(f"row {index} lacks group keys {missing}: {row}")
        groups.setdefault(tuple(row[key] for key in group_by), []).append(row)
    summary = []
    for key, members in groups.items():
        out = dict(zip(group_by, key))
        for metric in metrics:
            values = [
                float(row[metric]) for row in members if row.get(metric) is not None
            ]
            out[metric] = float(np.mean(values)) if values else math.nan
        out["count"] = len(members)
        summary.append(out)
    return summary


def write_csv(
    path: str, rows: Sequence[Mapping], columns: Optional[Sequence[str]] = None
) -> str:
    """Writes rows to a CSV file atomically (temporary file + ``os.replace``).

    If anything fails, the previous file at ``path`` (if any) is left intact
    and no temporary file remains.

    Arguments
    ---------
    path : str
        Destination file.
    rows : sequence of dict
        Rows to write; missing keys are written as empty cells.
    columns : sequence of str, optional
        Column order; by default the keys in order of first appearance
        across the rows.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "results.csv")
    >>> _ = write_csv(path, [{"id": "a", "si_sdri": 1.5}, {"id": "b", "gmacs": 3}])
    >>> print(open(path).read().strip())
    id,si_sdri,gmacs
    a,1.5,
    b,,3
    """
    rows = list(rows)
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {index} must be a dict, got {type(row).__name__}")
    if columns is None:
        # dict keeps insertion order: a stable, first-appearance column order
        columns = list(dict.fromkeys(key for row in rows for key in row))
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp_path, path)
    except BaseException:
        os.remove(tmp_path)
        raise
    return path
