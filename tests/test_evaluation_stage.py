"""Tests for speechbrain_dsn.evaluation_stage (the recipe's test stage)."""

import types

import numpy as np
import pytest
import torch

from speechbrain_dsn.evaluation_stage import _segment_types, gating_modes

SR = 8000


def _batch(masks):
    """A batch of one utterance whose sources are active where ``masks`` say (cached labels)."""
    labels = torch.from_numpy(np.stack(masks, -1).astype(np.float32))[None]  # [1, T, C]
    fields = {}
    for i in range(labels.shape[-1]):
        fields[f"s{i + 1}_sig"] = (labels[..., i] * 0.1,)
        fields[f"s{i + 1}_vad"] = (labels[..., i],)
    return types.SimpleNamespace(**fields)


def _masks(num_spks):
    spans = [(800, 4800), (3200, 7200), (4000, 6000)][:num_spks]
    masks = []
    for lo, hi in spans:
        m = np.zeros(8000, dtype=bool)
        m[lo:hi] = True
        masks.append(m)
    return masks


@pytest.mark.parametrize("num_spks", [1, 2, 3])
def test_segment_types_follow_num_spks(num_spks):
    hp = types.SimpleNamespace(sample_rate=SR, kernel_stride=8, kernel_size=16, segment_ms=96.0, num_spks=num_spks)
    masks = _masks(num_spks)
    frames, seg_types, seg_active = _segment_types(_batch(masks), 999, hp)
    centres = np.arange(999) * 8 + 8
    active = sum(m[centres].astype(int) for m in masks)
    assert np.array_equal(frames, np.minimum(active, 2))  # three speakers at once are overlap too
    assert seg_active.shape[1] == num_spks
    assert np.array_equal(seg_types, np.minimum(seg_active.sum(-1), 2))
    assert set(np.unique(frames)) == ({0, 1} if num_spks == 1 else {0, 1, 2})


def test_segment_types_reject_a_batch_without_num_spks_sources():
    hp = types.SimpleNamespace(sample_rate=SR, kernel_stride=8, kernel_size=16, segment_ms=96.0, num_spks=3)
    with pytest.raises(ValueError, match=r"s3_sig.*num_spks is 3"):
        _segment_types(_batch(_masks(2)), 999, hp)


def test_gating_modes():
    assert gating_modes((0.125, 1.0)) == [("internal", None), ("external_0.125", 0.125), ("external_1", 1.0)]
