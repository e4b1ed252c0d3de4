"""Separating real recordings: budget control, reports, long audio and the CLI (issue 11)."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_dsn.budget import budget_levels
from speechbrain_dsn.complexity import track_gmacs
from speechbrain_dsn.inference import DSNSeparation
from speechbrain_dsn.levels import Levels
from speechbrain_dsn.long_audio import separate_in_windows

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "pretrained" / "dsn_small"


@pytest.fixture(scope="module")
def separator(tmp_path_factory):
    return DSNSeparation.from_hparams(source=str(BUNDLE), savedir=str(tmp_path_factory.mktemp("sep")))


@pytest.fixture(scope="module")
def example():
    mix, rate = sf.read(BUNDLE / "example" / "mix.wav", dtype="float32")
    return torch.from_numpy(mix)[None]


def test_budget_is_met_per_input_and_the_gate_still_chooses_where(separator, example):
    chosen = []
    with torch.no_grad():
        for budget in (0.2, 0.4, 0.6, 0.8):
            separator.separate_batch(example, budget=budget)
            report = separator.last_report
            assert report.mode == "budget" and report.budget == budget
            assert abs(float(report.average[0]) - budget) < 0.02
            high = report.utilization[0] == 1.0
            assert 0 < int(high.sum()) < high.numel()  # input-adaptive, not one level everywhere
            chosen.append(high)
    # a larger budget keeps every frame that a smaller one ran at full width (one ordering, the gate's)
    for small, large in zip(chosen, chosen[1:]):
        assert bool((large | ~small).all())


def test_budget_levels_oracle_on_hand_made_logits():
    levels = Levels([0.125, 0.5, 1.0])
    torch.manual_seed(0)
    logits = torch.randn(3, 500, 3)
    for budget in (0.125, 0.3, 0.55, 0.9, 1.0):
        index = budget_levels(logits, levels, budget)
        average = levels.tensor()[index].mean(-1)
        assert (average - budget).abs().max() < 0.01, (budget, average)
        assert bool((average <= budget + 1e-9).all())  # a budget is never overspent
    # identical frames (digital silence) tie at every shift: they are raised one by one
    flat = torch.zeros(1, 400, 3)
    for budget in (0.3, 0.71):
        average = float(levels.tensor().double()[budget_levels(flat, levels, budget)].mean())
        assert budget - 0.875 / 400 <= average <= budget + 1e-9, (budget, average)
    # the lowest level is the floor: a budget below it runs everything there
    assert bool((budget_levels(logits, levels, 0.05) == 0).all())


def test_report_is_the_share_weighted_cost(separator, example):
    with torch.no_grad():
        separator.separate_batch(example, utilization=0.125)
        low = separator.last_report
        separator.separate_batch(example)
        internal = separator.last_report
    assert low.mode == "external" and bool((low.utilization == 0.125).all())
    assert float(low.gmacs[0]) == pytest.approx(separator._level_gmacs[0.125])
    expected = track_gmacs(separator._level_gmacs, internal.utilization[0]) + separator._gating_gmacs
    assert float(internal.gmacs[0]) == pytest.approx(expected)
    assert float(internal.average[0]) == pytest.approx(float(internal.utilization.mean()))
    assert low.gmacs[0] < internal.gmacs[0] < separator._level_gmacs[1.0] + separator._gating_gmacs


def test_bad_budgets_are_errors(separator, example):
    for kwargs, pattern in (
        ({"budget": 0.0}, "budget"),
        ({"budget": 1.5}, "budget"),
        ({"budget": 0.5, "utilization": 1.0}, "not both"),
    ):
        with pytest.raises(ValueError, match=pattern):
            separator.separate_batch(example, **kwargs)


def test_windows_keep_each_speaker_on_its_output():
    """An oracle separator that returns the true sources in a random order per window:
    the windowed result must put each source back on one output for the whole recording."""
    torch.manual_seed(0)
    sources = torch.randn(2, 20000)
    mix = sources.sum(0)
    calls = []

    def shuffled(window_mix):
        start = int(np.flatnonzero(np.isclose(mix.numpy(), float(window_mix[0, 0])))[0])
        piece = sources[:, start : start + window_mix.shape[-1]].T
        order = torch.randperm(2)
        calls.append(order.tolist())
        return piece[:, order], torch.zeros(window_mix.shape[-1] // 8)

    est = torch.cat([p for p, _ in separate_in_windows(shuffled, mix, 3000, 600, 8)])
    assert [0, 1] in calls and [1, 0] in calls  # the test really shuffled
    assert est.shape == (20000, 2)
    first = 0 if torch.dot(est[:, 0], sources[0]) > 0.5 * sources[0].norm() ** 2 else 1
    torch.testing.assert_close(est[:, first], sources[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(est[:, 1 - first], sources[1], atol=1e-5, rtol=0)


def test_long_file_is_separated_in_windows(separator, tmp_path, example):
    long = torch.cat([example[0]] * 4)  # 26 s: four windows of 8 s
    path = tmp_path / "long.wav"
    sf.write(path, long.numpy(), 8000)
    separator.window_seconds, separator.overlap_seconds = 8.0, 1.0
    try:
        est = separator.separate_file(str(path), budget=0.4)
    finally:
        separator.window_seconds, separator.overlap_seconds = (
            DSNSeparation.window_seconds,
            DSNSeparation.overlap_seconds,
        )
    assert est.shape == (1, long.numel(), 2) and torch.isfinite(est).all()
    report = separator.last_report
    assert abs(report.utilization.shape[-1] - long.numel() / 8) < 8
    assert abs(float(report.average[0]) - 0.4) < 0.02
    with pytest.raises(ValueError, match="single pass"):
        list(separator.separate_long(long, utilization=torch.ones(1, 10)))
    with pytest.raises(ValueError, match="one mixture"):
        list(separator.separate_long(torch.stack([long, long])))


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "speechbrain_dsn.separate", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def test_cli_writes_sources_and_plot_and_prints_one_line(tmp_path):
    stereo = tmp_path / "talk.wav"  # 16 kHz stereo int16: resampled and downmixed
    mix, _ = sf.read(BUNDLE / "example" / "mix.wav", dtype="float32")
    up = np.repeat(mix, 2)
    sf.write(stereo, np.stack([up, up], 1), 16000, subtype="PCM_16")
    done = _cli(stereo, "--out", tmp_path / "out", "--utilization", "0.125")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "average utilization 0.125" in lines[0] and "GMAC/s" in lines[0] and "RTF" in lines[0]
    for name in ("talk_s1.wav", "talk_s2.wav", "talk_utilization.png"):
        assert (tmp_path / "out" / name).is_file()
    out, rate = sf.read(tmp_path / "out" / "talk_s1.wav")
    assert rate == 8000 and out.shape == mix.shape


@pytest.mark.parametrize("case", ["missing", "not audio", "bad budget", "same name"])
def test_cli_bad_input_is_one_line_and_non_zero(tmp_path, case):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / "mix.wav"
    twin.write_bytes((BUNDLE / "example" / "mix.wav").read_bytes())
    args = {
        "missing": [tmp_path / "nope.wav"],
        "not audio": [bad],
        "bad budget": [BUNDLE / "example" / "mix.wav", "--budget", "2"],
        "same name": [BUNDLE / "example" / "mix.wav", twin],
    }[case]
    done = _cli(*args, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.strip().splitlines() if line.startswith("dsn-separate: error")]
    assert len(errors) == 1, done.stderr
    assert not list((tmp_path / "out").glob("*.part")) if (tmp_path / "out").exists() else True
