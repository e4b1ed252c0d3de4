"""Tests for speechbrain_dsn.plotting."""

import os

import numpy as np
import pytest
import torch

from speechbrain_dsn.plotting import plot_level_shares, plot_tradeoff, plot_utilization
from speechbrain_dsn.reports import summarize
from speechbrain_dsn.segment_types import frame_segment_types

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as stream:
        return stream.read(8) == PNG_MAGIC and os.path.getsize(path) > 5000


def test_plot_utilization_writes_png(tmp_path):
    s1 = np.zeros(8000, dtype=bool)
    s2 = np.zeros(8000, dtype=bool)
    s1[800:4800] = True
    s2[3200:7200] = True
    t = np.arange(8000) / 8000
    noise = 0.01 * np.random.default_rng(0).standard_normal(8000)
    mixture = np.sin(2 * np.pi * 300 * t) * s1 + np.sin(2 * np.pi * 900 * t) * s2 + noise
    types = frame_segment_types([s1, s2], 999)
    util = np.where(types == 2, 1.0, np.where(types == 1, 0.5, 0.125))
    path = plot_utilization(
        mixture,
        torch.from_numpy(util),
        8000,
        8,
        str(tmp_path / "util.png"),
        (0.125, 0.5, 1.0),
        segment_types=types,
        title="test",
    )
    assert path == str(tmp_path / "util.png")
    assert _is_png(path)
    with pytest.raises(ValueError, match="segment_types"):
        plot_utilization(mixture, util, 8000, 8, str(tmp_path / "bad.png"), (0.125, 1.0), segment_types=types[:-1])
    assert not (tmp_path / "bad.png").exists()


def test_plot_tradeoff_writes_png(tmp_path):
    rows = summarize(
        [
            {"condition": "ov100", "gating": "internal", "si_sdri": 18.0, "avg_utilization": 0.6, "gmacs": 16.0},
            {"condition": "ov25", "gating": "internal", "si_sdri": 21.0, "avg_utilization": 0.3, "gmacs": 8.0},
            {"condition": "ov100", "gating": "U=0.125", "si_sdri": 15.0, "avg_utilization": 0.125, "gmacs": 5.8},
        ]
    )
    path = plot_tradeoff(rows, str(tmp_path / "tradeoff.png"))
    assert _is_png(path)
    no_gmacs = [{k: v for k, v in row.items() if k != "gmacs"} for row in rows]
    assert _is_png(plot_tradeoff(no_gmacs, str(tmp_path / "plain.png")))


def test_plot_tradeoff_draws_the_reference_line(tmp_path):
    rows = [
        {"condition": "ov100", "gating": g, "si_sdri": s, "avg_utilization": u, "gmacs": 4 + 24 * u}
        for g, u, s in [("static_0.125", 0.125, 1.0), ("static_1", 1.0, 3.0), ("internal", 0.5, 2.5)]
    ]
    with_line, without = str(tmp_path / "line.png"), str(tmp_path / "plain.png")
    plot_tradeoff(rows, with_line, reference=[(1.0, 3.0), (0.125, 1.0)])
    plot_tradeoff(rows, without)
    assert _is_png(with_line)
    assert (tmp_path / "line.png").read_bytes() != (tmp_path / "plain.png").read_bytes()


def test_plot_level_shares_checks_one_share_per_level(tmp_path):
    shares = {"silence": [0.9, 0.1], "single": [0.5, 0.5], "overlap": [0.2, 0.8]}
    assert _is_png(plot_level_shares(shares, (0.125, 1.0), str(tmp_path / "shares.png"), title="DSN"))
    with pytest.raises(ValueError, match="one per level"):
        plot_level_shares(shares, (0.125, 0.5, 1.0), str(tmp_path / "bad.png"))
    assert not (tmp_path / "bad.png").exists()
