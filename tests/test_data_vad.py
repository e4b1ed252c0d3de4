"""Tests for speechbrain_dsn.data.vad (WebRTC speech activity and boundaries)."""

import numpy as np
import pytest
import torch
import torchaudio

from speechbrain_dsn.data.vad import speech_activity, speech_boundaries
from tests.data_layouts import demo_speech


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050])
@pytest.mark.parametrize("speaker", ["aew", "2033", "LJ", "3331"])
def test_boundaries_of_speech_inserted_in_silence(speaker, sample_rate):
    speech = demo_speech(speaker, 0, seconds=3.0)
    start, end = speech_boundaries(speech, 8000)
    core = speech[start:end]  # speech with its own silences trimmed
    lead, trail = int(0.7 * 8000), int(1.1 * 8000)
    signal = np.concatenate([np.zeros(lead), core, np.zeros(trail)]).astype(np.float32)
    if sample_rate != 8000:
        signal = torchaudio.functional.resample(torch.from_numpy(signal), 8000, sample_rate).numpy()
    found = np.array(speech_boundaries(signal, sample_rate)) * 8000 / sample_rate
    tolerance = 0.03 * 8000  # 30 ms
    assert abs(found[0] - lead) <= tolerance
    assert abs(found[1] - (lead + len(core))) <= tolerance


def test_silence_and_empty_fall_back_to_whole_signal():
    assert speech_boundaries(np.zeros(8000), 8000) == (0, 8000)
    assert speech_boundaries(np.zeros(0), 8000) == (0, 0)
    assert not speech_activity(np.zeros(8000), 8000).any()
    assert speech_activity(np.zeros(0), 8000).shape == (0,)


def test_isolated_blip_is_ignored():
    signal = np.zeros(16000, dtype=np.float32)
    signal[8000:8080] = np.random.default_rng(0).uniform(-0.9, 0.9, 80)  # 10 ms click
    assert speech_boundaries(signal, 8000) == (0, 16000)


def test_activity_mask_marks_speech_only_where_inserted():
    core = demo_speech("aew", 0, seconds=2.0)
    signal = np.concatenate([np.zeros(8000), core, np.zeros(8000)])
    mask = speech_activity(signal, 8000)
    assert mask.shape == signal.shape and mask.dtype == bool
    assert not mask[:7000].any() and not mask[-7000:].any()
    assert mask[8000 : 8000 + len(core)].mean() > 0.5
    # torch input, and any gain, give the same decisions
    assert np.array_equal(speech_activity(torch.from_numpy(0.1 * signal), 8000), mask)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="1-D"):
        speech_activity(np.zeros((2, 100)), 8000)
    with pytest.raises(ValueError, match="frame_ms"):
        speech_activity(np.zeros(100), 8000, frame_ms=15)
