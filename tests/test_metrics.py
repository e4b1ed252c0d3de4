"""Tests for speechbrain_dsn.metrics, speechbrain_dsn.segment_types and the CSV helpers of speechbrain_dsn.reports."""

import csv
import math
import os

import numpy as np
import pytest
import torch

from speechbrain_dsn.metrics import sdr_improvement, si_sdr_improvement
from speechbrain_dsn.reports import summarize, write_csv
from speechbrain_dsn.segment_types import (
    SEGMENT_TYPES,
    frame_segment_types,
    segment_stats,
    segment_type_names,
    utilization_share,
)


def _masks():
    # 8 kHz, 1 s: speaker 1 in [0.1, 0.6) s, speaker 2 in [0.4, 0.9) s.
    s1 = np.zeros(8000, dtype=bool)
    s2 = np.zeros(8000, dtype=bool)
    s1[800:4800] = True
    s2[3200:7200] = True
    return s1, s2


# ---------------------------------------------------------- segment types
@pytest.mark.parametrize("as_tensor", [False, True])
def test_frame_segment_types_centre(as_tensor):
    s1, s2 = _masks()
    if as_tensor:
        s1, s2 = torch.from_numpy(s1), torch.from_numpy(s2)
    types = frame_segment_types([s1, s2], num_frames=999)
    assert isinstance(types, torch.Tensor if as_tensor else np.ndarray)
    types = np.asarray(types)
    centres = np.arange(999) * 8 + 8
    expected = np.where(
        (centres >= 3200) & (centres < 4800),
        2,
        np.where((centres >= 800) & (centres < 7200), 1, 0),
    )
    assert np.array_equal(types, expected)
    assert set(np.unique(types)) == {0, 1, 2}


def test_frame_segment_types_majority_on_segments():
    s1, s2 = _masks()
    # 96 ms segments with 50 % overlap; segment 8 = [3072, 3840) has speaker 2
    # on 640 of 768 samples (overlap); segment 7 = [2688, 3456) only 256.
    types = frame_segment_types([s1, s2], 19, frame_hop=384, frame_length=768, rule="majority")
    assert types[8] == 2 and types[7] == 1
    assert types[0] == 0  # [0, 768): no speaker
    with pytest.raises(ValueError, match="rule"):
        frame_segment_types([s1, s2], 19, rule="mean")


def test_frame_segment_types_rejects_mismatched_masks():
    with pytest.raises(ValueError, match=r"\[time\]"):
        frame_segment_types([np.ones(10, bool), np.ones(12, bool)], 1)


def test_frames_past_the_masks_are_silence():
    types = frame_segment_types([np.ones(40, bool), np.ones(40, bool)], 10)
    assert list(types) == [2, 2, 2, 2, 0, 0, 0, 0, 0, 0]


def test_segment_types_of_three_sources():
    s1, s2 = _masks()
    s3 = np.zeros(8000, dtype=bool)
    s3[4000:6000] = True  # two, then three speakers at once: both are overlap
    types = np.asarray(frame_segment_types([s1, s2, s3], num_frames=999))
    centres = np.arange(999) * 8 + 8
    active = sum(m[centres].astype(int) for m in (s1, s2, s3))
    assert np.array_equal(types, np.minimum(active, 2))
    assert set(np.unique(types)) == {0, 1, 2} and (active == 3).any()
    assert segment_type_names(3) == SEGMENT_TYPES == ("silence", "single", "overlap")


def test_segment_types_of_one_source_have_no_overlap():
    s1, _ = _masks()
    types = np.asarray(frame_segment_types([s1], num_frames=999))
    assert set(np.unique(types)) == {0, 1}
    names = segment_type_names(1)
    assert names == ("silence", "single")
    share = utilization_share(np.full(999, 0.5), types, (0.5, 1.0), names=names)
    assert list(share) == list(names)
    assert list(segment_stats(np.zeros(999), types, names=names)) == list(names)
    with pytest.raises(ValueError, match="num_spks"):
        segment_type_names(0)
    with pytest.raises(ValueError, match="at least one"):
        frame_segment_types([], num_frames=3)


@pytest.mark.parametrize("num_spks", [1, 3])
def test_si_sdr_improvement_of_n_sources_undoes_the_permutation(num_spks):
    targets = torch.randn(4000, num_spks)
    mixture = targets.sum(-1)
    perm = list(reversed(range(num_spks)))
    estimates = targets[:, perm] + 0.01 * torch.randn(4000, num_spks)
    out = si_sdr_improvement(estimates, targets, mixture)
    assert torch.equal(out["estimates_reordered"], estimates[:, perm])
    assert out["si_sdr_per_source"].shape == (num_spks,) and (out["si_sdr_per_source"] > 30).all()
    sdr = sdr_improvement(out["estimates_reordered"], targets, mixture)
    assert sdr["sdr_per_source"].shape == (num_spks,) and (sdr["sdr_per_source"] > 30).all()


# ------------------------------------------------------ utilization share
def test_utilization_share_sums_to_one_and_handles_missing_types():
    levels = (0.125, 0.5, 1.0)
    types = np.array([1, 1, 1, 1, 2, 2])
    util = torch.tensor([0.125, 0.5, 0.5, 1.0, 1.0, 1.0])
    share = utilization_share(util, types, levels)
    assert list(share) == list(SEGMENT_TYPES)
    assert share["single"] == {0.125: 0.25, 0.5: 0.5, 1.0: 0.25}
    assert share["overlap"] == {0.125: 0.0, 0.5: 0.0, 1.0: 1.0}
    for name in ("single", "overlap"):
        assert sum(share[name].values()) == pytest.approx(1.0)
    assert all(math.isnan(v) for v in share["silence"].values())


def test_utilization_share_maps_values_with_the_one_levels_tolerance():
    share = utilization_share([0.1250001, 0.99995], [0, 0], (0.125, 1.0))
    assert share["silence"] == {0.125: 0.5, 1.0: 0.5}
    # a value that is no level is an error (Levels.index), not snapped to the nearest one
    with pytest.raises(ValueError, match="not among the levels"):
        utilization_share([0.99], [0], (0.125, 1.0))


# ---------------------------------------------------------------- SI-SDRi
def test_si_sdr_improvement_matches_manual_computation():
    torch.manual_seed(0)
    targets = torch.randn(2, 4000, 2)
    mixture = targets.sum(-1)
    # Second example's estimates come out swapped, PIT must undo that.
    estimates = targets + 0.1 * torch.randn_like(targets)
    estimates[1] = estimates[1].flip(-1)
    out = si_sdr_improvement(estimates, targets, mixture)
    assert out["si_sdri_per_source"].shape == (2, 2)
    # Mixture of two equal-power independent sources: SI-SDR about 0 dB.
    mix_si_sdr = out["si_sdr_per_source"] - out["si_sdri_per_source"]
    assert torch.allclose(mix_si_sdr, torch.zeros(2, 2), atol=0.5)
    # Noise at -20 dB: SI-SDR about 20 dB for every source after PIT.
    assert torch.allclose(out["si_sdr_per_source"], torch.full((2, 2), 20.0), atol=0.5)
    assert torch.allclose(out["si_sdri"], out["si_sdri_per_source"].mean(-1))
    # the reordered estimates undo the swap of the second example
    assert torch.equal(out["estimates_reordered"][0], estimates[0])
    assert torch.equal(out["estimates_reordered"][1], estimates[1].flip(-1))
    single = si_sdr_improvement(estimates[1], targets[1], mixture[1])
    assert single["estimates_reordered"].shape == (4000, 2)
    assert single["si_sdri"].dim() == 0
    assert torch.allclose(single["si_sdri"], out["si_sdri"][1])


def test_si_sdr_improvement_rejects_bad_mixture():
    with pytest.raises(ValueError, match="mixture"):
        si_sdr_improvement(torch.randn(1, 100, 2), torch.randn(1, 100, 2), torch.randn(1, 99))


# -------------------------------------------------------- segment stats
# ---------------------------------------------------------- BSS-eval SDRi
def _two_sources(seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(8000 * seconds)) / 8000
    s1 = torch.sin(2 * math.pi * 220 * t) * (1 + torch.sin(2 * math.pi * 3 * t))
    s2 = 0.5 * torch.randn(len(t), generator=g)
    return torch.stack([s1, s2], -1), g


def test_sdr_improvement_matches_fast_bss_eval_directly():
    import fast_bss_eval

    targets, g = _two_sources()
    mixture = targets.sum(-1)
    estimates = targets + 0.05 * torch.randn(targets.shape, generator=g)
    out = sdr_improvement(estimates, targets, mixture)
    ref = targets.T.double()
    sdr = fast_bss_eval.bss_eval_sources(ref, estimates.T.double(), compute_permutation=False)[0]
    sdr_mix = fast_bss_eval.bss_eval_sources(ref, mixture.double().expand(2, -1), compute_permutation=False)[0]
    assert torch.allclose(out["sdr_per_source"], sdr.float(), atol=1e-3)
    assert torch.allclose(out["sdri_per_source"], (sdr - sdr_mix).float(), atol=1e-3)
    assert out["sdr"].item() == pytest.approx(sdr.mean().item(), abs=1e-3)
    assert out["sdr"].item() > 20  # a clean estimate: high SDR
    # SDR allows a 512-tap distortion filter: a filtered estimate keeps a high SDR, SI-SDR does not
    filtered = 0.5 * (targets + torch.roll(targets, 3, 0))
    assert (
        sdr_improvement(filtered, targets, mixture)["sdr"]
        > si_sdr_improvement(filtered, targets, mixture)["si_sdr"] + 10
    )


def test_sdr_improvement_of_the_mixture_is_zero_and_permutation_is_undone():
    targets, g = _two_sources(seed=1)
    mixture = targets.sum(-1)
    baseline = sdr_improvement(mixture[:, None].expand_as(targets), targets, mixture)
    assert torch.equal(baseline["sdri_per_source"], torch.zeros(2))
    estimates = targets + 0.1 * torch.randn(targets.shape, generator=g)
    direct = sdr_improvement(estimates, targets, mixture)
    swapped = si_sdr_improvement(estimates.flip(-1), targets, mixture)["estimates_reordered"]
    assert torch.allclose(sdr_improvement(swapped, targets, mixture)["sdri"], direct["sdri"])
    # the mixture's SDR can be passed in (computed once per utterance)
    again = sdr_improvement(estimates, targets, mixture, mixture_sdr=direct["mixture_sdr_per_source"])
    assert torch.equal(again["sdri_per_source"], direct["sdri_per_source"])


def test_sdr_improvement_batched_and_silent_reference():
    targets, g = _two_sources(seed=2)
    silent = targets.clone()
    silent[:, 1] = 0  # a source that never speaks: BSS-eval SDR is undefined
    batch = torch.stack([targets, silent])
    mixture = batch.sum(-1)
    estimates = batch + 0.1 * torch.randn(batch.shape, generator=g)
    out = sdr_improvement(estimates, batch, mixture)
    assert out["sdr_per_source"].shape == (2, 2) and out["sdri"].shape == (2,)
    assert torch.isnan(out["sdr_per_source"][1, 1]) and torch.isnan(out["sdri_per_source"][1, 1])
    # the utterance means skip the undefined source instead of turning NaN
    assert out["sdri"][1].item() == pytest.approx(out["sdri_per_source"][1, 0].item())
    alone = sdr_improvement(estimates[0], targets, mixture[0])
    assert torch.allclose(out["sdr_per_source"][0], alone["sdr_per_source"])
    # no source with a reference: NaN (the test stage writes an empty cell, skipped by the means)
    quiet = torch.zeros(4000, 2)
    assert torch.isnan(sdr_improvement(torch.randn(4000, 2), quiet, quiet.sum(-1))["sdri"])
    with pytest.raises(ValueError, match="mixture"):
        sdr_improvement(estimates, batch, mixture[:, :10])


def test_segment_stats():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, -5.0])
    types = torch.tensor([2, 2, 2, 2, 1, 0])
    stats = segment_stats(values, types)
    assert stats["overlap"] == {
        "mean": 2.5,
        "median": 2.5,
        "q1": 1.75,
        "q3": 3.25,
        "count": 4,
    }
    assert stats["single"]["count"] == 1 and stats["single"]["mean"] == 10.0
    assert stats["silence"]["median"] == -5.0
    empty = segment_stats(np.array([1.0]), np.array([1]))
    assert empty["overlap"]["count"] == 0 and math.isnan(empty["overlap"]["q3"])


# -------------------------------------------------------- summarize / CSV
ROWS = [
    {"id": "a", "condition": "ov100", "gating": "internal", "si_sdri": 18.0, "avg_utilization": 0.6, "gmacs": 16.0},
    {"id": "b", "condition": "ov25", "gating": "internal", "si_sdri": 21.0, "avg_utilization": 0.3, "gmacs": 8.0},
    {"id": "c", "condition": "ov100", "gating": "internal", "si_sdri": 20.0, "avg_utilization": 0.8, "gmacs": None},
    {"id": "d", "condition": "ov100", "gating": "U=0.125", "si_sdri": 15.0, "avg_utilization": 0.125, "gmacs": 5.8},
]


def test_summarize_means_per_group():
    summary = summarize(ROWS)
    assert [(r["condition"], r["gating"]) for r in summary] == [
        ("ov100", "internal"),
        ("ov25", "internal"),
        ("ov100", "U=0.125"),
    ]
    first = summary[0]
    assert first["count"] == 2
    assert first["si_sdri"] == pytest.approx(19.0)
    assert first["avg_utilization"] == pytest.approx(0.7)
    assert first["gmacs"] == pytest.approx(16.0)  # None is skipped
    by_gating = summarize(ROWS, group_by=("gating",), metrics=("si_sdri",))
    assert by_gating[0] == {"gating": "internal", "si_sdri": 59 / 3, "count": 3}
    with pytest.raises(ValueError, match="group keys"):
        summarize([{"condition": "x"}])


def test_write_csv_roundtrip_and_column_order(tmp_path):
    path = tmp_path / "results.csv"
    rows = [{"id": "a", "x": 1}, {"id": "b", "y": 2.5}]
    assert write_csv(str(path), rows) == str(path)
    with open(path, newline="") as stream:
        read = list(csv.DictReader(stream))
    assert list(read[0]) == ["id", "x", "y"]
    assert read == [{"id": "a", "x": "1", "y": ""}, {"id": "b", "x": "", "y": "2.5"}]
    write_csv(str(path), rows, columns=("y", "id", "x"))
    assert path.read_text().splitlines()[0] == "y,id,x"


class _Unprintable:
    def __str__(self):
        raise RuntimeError("cannot format")


def test_write_csv_is_atomic(tmp_path):
    path = tmp_path / "results.csv"
    write_csv(str(path), [{"id": "old"}])
    before = path.read_bytes()
    # The bad row fails half-way through writing.
    rows = [{"id": str(i)} for i in range(1000)] + [{"id": _Unprintable()}]
    with pytest.raises(RuntimeError, match="cannot format"):
        write_csv(str(path), rows)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["results.csv"]
    with pytest.raises(TypeError, match="row 1"):
        write_csv(str(tmp_path / "new.csv"), [{"id": 1}, ["not", "a", "dict"]])
    assert os.listdir(tmp_path) == ["results.csv"]
