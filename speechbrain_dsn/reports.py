"""Reports of the test stage: per-utterance results, summaries and CSV files (Section V).

This module owns what the test stage writes under its ``output_folder``
(:mod:`speechbrain_dsn.evaluation_stage` runs the test sets):

* ``test_results.csv`` (per utterance and gating mode) and
  ``test_summary.csv`` (the mean per condition x gating mode, plus the mean
  over the overlap/noise conditions as ``all``, which leaves ``official``
  out: it is another test set, reported on its own);
* ``utilization_by_segment.csv`` and ``segsdr_by_segment.csv`` (per segment
  type of the mixtures' number of sources);
* ``plots/tradeoff.png`` (Fig. 10);

with :func:`summarize` (means per group) and :func:`write_csv` (atomic CSV
writing) as building blocks.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from speechbrain_dsn.plotting import plot_tradeoff
from speechbrain_dsn.segment_types import SEGMENT_TYPES, segment_stats

__all__ = ["OFFICIAL", "SUMMARY_METRICS", "summarize", "write_csv", "write_reports"]

OFFICIAL = "official"  # the released test set (speechbrain_dsn.data.prepare), kept out of `all`
SUMMARY_METRICS = ("si_sdri", "sdri", "avg_utilization", "gmacs")


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
            values = [float(row[metric]) for row in members if row.get(metric) is not None]
            out[metric] = float(np.mean(values)) if values else math.nan
        out["count"] = len(members)
        summary.append(out)
    return summary


def write_csv(path: str, rows: Sequence[Mapping], columns: Optional[Sequence[str]] = None) -> str:
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
    handle, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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


def write_reports(rows, share_counts, seg_scores, levels, output_folder, segment_names=SEGMENT_TYPES):
    """Writes the CSVs and the trade-off figure of the test stage; returns the summary rows.

    Arguments
    ---------
    rows : list of dict
        Per-utterance results (``condition``, ``gating``, the metrics).
    share_counts : dict
        ``(condition, gating, segment type name)`` to the frame count per level.
    seg_scores : dict
        ``(condition, gating)`` to a list of ``(segSI-SDR values, segment types)``.
    levels : sequence of float
        Utilization levels.
    output_folder : str
        Where the files go.
    segment_names : sequence of str
        The segment types of the mixtures (``segment_type_names(num_spks)``).

    Returns
    -------
    list of dict
        The rows of ``test_summary.csv``.
    """
    os.makedirs(output_folder, exist_ok=True)
    write_csv(os.path.join(output_folder, "test_results.csv"), rows)
    summary = summarize(rows, metrics=SUMMARY_METRICS)
    conditions = [r for r in rows if r["condition"] != OFFICIAL]
    summary += [dict(r, condition="all") for r in summarize(conditions, group_by=("gating",), metrics=SUMMARY_METRICS)]
    write_csv(
        os.path.join(output_folder, "test_summary.csv"),
        summary,
        columns=["condition", "gating", *SUMMARY_METRICS, "count"],
    )
    shares = []
    for (condition, mode, name), counts in share_counts.items():
        total = counts.sum()
        for level, count in zip(levels, counts):
            shares.append(
                dict(
                    condition=condition,
                    gating=mode,
                    segment_type=name,
                    utilization=level,
                    share=count / total if total else float("nan"),
                    frames=int(count),
                )
            )
    write_csv(os.path.join(output_folder, "utilization_by_segment.csv"), shares)
    stats_rows = []
    for (condition, mode), parts in seg_scores.items():
        values = np.concatenate([p[0] for p in parts])
        types = np.concatenate([p[1] for p in parts])
        for name, stats in segment_stats(values, types, names=segment_names).items():
            stats_rows.append(dict(condition=condition, gating=mode, segment_type=name, **stats))
    write_csv(os.path.join(output_folder, "segsdr_by_segment.csv"), stats_rows)
    plot_tradeoff([r for r in summary if r["condition"] != "all"], os.path.join(output_folder, "plots", "tradeoff.png"))
    return summary
