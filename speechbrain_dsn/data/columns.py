"""CSV columns of the prepared data, for mixtures of ``num_spks`` sources.

One definition shared by the writer (:mod:`speechbrain_dsn.data.prepare`)
and the readers (:mod:`speechbrain_dsn.data.dataio`). Source ``i`` (1-based)
owns the columns ``s{i}_wav``, ``s{i}_spk``, ``s{i}_start``, ``s{i}_end`` and,
in the training/validation CSVs, ``s{i}_gain``; the columns of one kind are
grouped, so that two sources give the historical WSJ0-2mix column order.
"""

from typing import List, Sequence

NOISE_TEST_FIELDS = ["noise_wav", "noise_activity", "snr_db"]


def _per_source(num_spks: int, *suffixes: str) -> List[str]:
    return [f"s{i}_{suffix}" for suffix in suffixes for i in range(1, num_spks + 1)]


def bound_keys(num_spks: int) -> List[str]:
    """``s1_start, s1_end, s2_start, ...``: speech boundaries of every source.

    Example
    -------
    >>> bound_keys(2)
    ['s1_start', 's1_end', 's2_start', 's2_end']
    """
    return [f"s{i}_{edge}" for i in range(1, num_spks + 1) for edge in ("start", "end")]


def source_fields(num_spks: int) -> List[str]:
    """Columns of ``train.csv`` / ``valid.csv`` (one row per set of source files; + ``noise_wav``).

    Example
    -------
    >>> source_fields(1)
    ['ID', 'duration', 's1_wav', 's1_spk', 's1_start', 's1_end', 's1_gain']
    """
    return (["ID", "duration"] + _per_source(num_spks, "wav") + _per_source(num_spks, "spk")
            + bound_keys(num_spks) + _per_source(num_spks, "gain"))


def test_fields(num_spks: int) -> List[str]:
    """Columns of a ``test_<condition>.csv`` (+ ``NOISE_TEST_FIELDS`` with noise).

    Example
    -------
    >>> test_fields(3)[:9]
    ['ID', 'duration', 'mix_wav', 's1_wav', 's2_wav', 's3_wav', 'overlap', 'target_overlap', 's1_start']
    """
    return (["ID", "duration", "mix_wav"] + _per_source(num_spks, "wav") + ["overlap", "target_overlap"]
            + bound_keys(num_spks) + ["sir_db"] + _per_source(num_spks, "spk"))


def count_sources(columns: Sequence[str]) -> int:
    """Number of sources of a CSV: the ``s{i}_wav`` columns, ``i = 1, 2, ...``.

    Example
    -------
    >>> count_sources(["ID", "mix_wav", "s1_wav", "s2_wav", "s3_wav"])
    3
    """
    num = 0
    while f"s{num + 1}_wav" in columns:
        num += 1
    return num


test_fields.__test__ = False  # a column list, not a test (pytest collects test_* names)
