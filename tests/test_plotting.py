"""Tests for speechbrain_dsn.plotting."""

import os

import numpy as np
import pytest
import torch

from speechbrain_dsn import evaluation
from speechbrain_dsn.evaluation import frame_segment_types, summarize
from speechbrain_dsn.plotting import plot_tradeoff, plot_utilization

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as stream:
        return stream.read(8) == PNG_MAGIC and os.path.getsize(path) > 5000


def test_evaluation_reexports_plots():
    assert evaluation.plot_utilization is plot_utilization
    assert evaluation.plot_tradeoff is plot_tradeoff


def test_plot_utilization_writes_png(tmp_path):
    s1 = np.zeros(8000, dtype=bool)
    s2 = np.zeros(8000, dtype=bool)
    s1[800:4800] = True
    s2[3200:7200] = True
    t = np.arange(8000) / 8000
    noise = 0.01 * np.random.default_rng(0).standard_normal(8000)
    mixture = (
        np.sin(2 * np.pi * 300 * t) * s1 + np.sin(2 * np.pi * 900 * t) * s2 + noise
    )
    types = frame_segment_types(s1, s2, 999)
    util = np.where(types == 2, 1.0, np.where(types == 1, 0.5, 0.125))
    path = plot_utilization(
        mixture, torch.from_numpy(util), 8000, 8, str(tmp_path / "util.png"),
        (0.125, 0.5, 1.0), segment_types=types, title="test",
    )
    assert path == str(tmp_path / "util.png")
    assert _is_png(path)
    with pytest.raises(ValueError, match="segment_types"):
        plot_utilization(mixture, util, 8000, 8, str(tmp_path / "bad.png"),
                         (0.125, 1.0), segment_types=types[:-1])
    assert not (tmp_path / "bad.png").exists()


def test_plot_tradeoff_writes_png(tmp_path):
    rows = summarize([
        {"condition": "ov100", "gating": "internal", "si_sdri": 18.0,
         "avg_utilization": 0.6, "gmacs": 16.0},
        {"condition": "ov25", "gating": "internal", "si_sdri": 21.0,
         "avg_utilization": 0.3, "gmacs": 8.0},
        {"condition": "ov100", "gating": "U=0.125", "si_sdri": 15.0,
         "avg_utilization": 0.125, "gmacs": 5.8},
    ])
    path = plot_tradeoff(rows, str(tmp_path / "tradeoff.png"))
    assert _is_png(path)
    no_gmacs = [{k: v for k, v in row.items() if k != "gmacs"} for row in rows]
    assert _is_png(plot_tradeoff(no_gmacs, str(tmp_path / "plain.png")))
