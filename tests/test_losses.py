"""Tests for speechbrain_dsn.losses (eqs. 17-20)."""

import math

import pytest
import torch
from speechbrain.nnet.losses import get_si_snr_with_pitwrapper

from speechbrain_dsn.losses import (
    complexity_loss,
    dsn_loss,
    pit_si_sdr,
    segment_activity,
    segmental_si_sdr,
    segments_to_frames,
    signal_dependent_weights,
)

SR = 8000


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _tone(period, num_samples):
    n = torch.arange(num_samples, dtype=torch.float64)
    return torch.sin(2 * math.pi * n / period)


# --------------------------------------------------------------------- PIT
@pytest.mark.parametrize("perm", [(1, 0), (0, 1), (1, 2, 0), (2, 0, 1), (0, 2, 1), (0, 1, 2)])
def test_pit_permuted_targets_give_optimal_loss(perm):
    sources = len(perm)
    targets = torch.randn(3, 1600, sources)
    estimates = targets[..., list(perm)]
    loss, reordered = pit_si_sdr(estimates, targets)
    perfect = get_si_snr_with_pitwrapper(targets, targets.clone())
    assert loss.shape == (3,)
    assert torch.allclose(loss, perfect)
    assert (loss < -60).all()
    assert torch.equal(reordered, targets)


@pytest.mark.parametrize("perm", [(1, 0), (1, 2, 0), (2, 0, 1)])
def test_pit_reorders_noisy_estimates(perm):
    sources = len(perm)
    targets = torch.randn(2, 1600, sources)
    # Different noise per source, so that the match is unambiguous but inexact.
    noise = torch.randn_like(targets) * torch.linspace(0.1, 0.3, sources)
    estimates = (targets + noise)[..., list(perm)]
    loss, reordered = pit_si_sdr(estimates, targets)
    assert torch.equal(reordered, targets + noise)
    assert torch.allclose(loss, get_si_snr_with_pitwrapper(targets, estimates))


def test_pit_loss_has_gradient():
    targets = torch.randn(2, 800, 2)
    estimates = torch.randn(2, 800, 2, requires_grad=True)
    loss, reordered = pit_si_sdr(estimates, targets)
    (loss.sum() + reordered.sum()).backward()
    assert estimates.grad is not None and estimates.grad.abs().sum() > 0


def test_pit_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[batch, time, sources\]"):
        pit_si_sdr(torch.randn(800, 2), torch.randn(800, 2))
    with pytest.raises(ValueError, match="same shape"):
        pit_si_sdr(torch.randn(1, 800, 2), torch.randn(1, 801, 2))


# ------------------------------------------------------------ segSI-SDR
def test_segmental_si_sdr_matches_analytic_value_per_segment():
    # Non-overlapping 96 ms segments (768 samples); in each, the noise is a
    # tone orthogonal to the target tone, scaled by a known gain.
    num_segments, length = 5, 768
    gains = torch.tensor([1.0, 0.1, 0.01, 0.5, 2.0], dtype=torch.float64)
    target = _tone(96, num_segments * length)
    noise = _tone(64, num_segments * length) * gains.repeat_interleave(length)
    targets = torch.stack([target, 2 * target], -1).unsqueeze(0)
    estimates = torch.stack([target + noise, 2 * (target + 3 * noise)], -1)
    seg = segmental_si_sdr(estimates.unsqueeze(0), targets, SR, overlap=0.0)
    expected = torch.stack([-20 * torch.log10(gains), -20 * torch.log10(3 * gains)], -1)
    assert seg.shape == (1, num_segments, 2)
    assert torch.allclose(seg[0], expected, atol=1e-4)


def test_segmental_si_sdr_shape_and_overlap():
    # Tone periods divide the 384-sample hop, so every 50 % overlapping
    # segment holds whole periods and the SI-SDR is exactly -20 log10(gain).
    target = _tone(96, 8000)
    estimate = target + 0.1 * _tone(64, 8000)
    targets = target.reshape(1, -1, 1).repeat(2, 1, 1)
    seg = segmental_si_sdr(estimate.reshape(1, -1, 1).repeat(2, 1, 1), targets, SR)
    assert seg.shape == (2, 1 + (8000 - 768) // 384, 1)
    assert torch.allclose(seg, torch.full_like(seg, 20.0), atol=1e-4)


def test_segmental_si_sdr_short_signal_is_one_segment():
    targets = torch.randn(1, 500, 2)
    seg = segmental_si_sdr(targets, targets.clone(), SR)
    assert seg.shape == (1, 1, 2)
    assert (seg > 60).all()


def test_segment_activity_is_the_majority_of_vad_labels():
    labels = torch.zeros(1, 8000, 3)
    labels[0, :, 0] = 1.0  # always speaking
    labels[0, 1000:1768, 1] = 1.0  # one word
    active = segment_activity(labels, SR)
    assert active.shape == (1, 19, 3)
    assert active[0, :, 0].all()
    assert not active[0, :, 2].any()
    starts = torch.arange(19) * 384
    # active where more than half of the segment's 768 samples are speech
    inside = (torch.clamp(starts + 768, max=1768) - torch.clamp(starts, min=1000)).clamp(min=0)
    assert torch.equal(active[0, :, 1], inside > 384)


def test_training_and_evaluation_share_one_definition_of_speech_activity(tmp_path):
    """Eq. 20's silence / one-speaker segments are the evaluation's segment types on the same labels."""
    import types

    import numpy as np

    from speechbrain_dsn.data.dataio import OnTheFlyMixer
    from speechbrain_dsn.data.vad import ActivityCache, speech_activity
    from speechbrain_dsn.evaluation_stage import _segment_types
    from tests.test_data_crop import _source_file

    rng = np.random.default_rng(0)
    (p1, b1), (p2, b2) = _source_file(tmp_path, "a", 3.0, 130, rng), _source_file(tmp_path, "b", 2.0, 220, rng)
    row = {
        "s1_wav": p1,
        "s2_wav": p2,
        "s1_start": b1[0],
        "s1_end": b1[1],
        "s2_start": b2[0],
        "s2_end": b2[1],
        "s1_gain": 1.0,
        "s2_gain": 1.0,
    }
    out = OnTheFlyMixer(SR, (0.5, 0.5), activity=ActivityCache(SR)).mix(row, rng)
    labels = torch.stack([out["s1_vad"], out["s2_vad"]], -1)[None]
    targets = torch.stack([out["s1_sig"], out["s2_sig"]], -1)[None]
    training = segment_activity(labels, SR)[0].numpy()
    batch = types.SimpleNamespace(
        s1_sig=(targets[..., 0],), s2_sig=(targets[..., 1],), s1_vad=(labels[..., 0],), s2_vad=(labels[..., 1],)
    )
    hp = types.SimpleNamespace(sample_rate=SR, kernel_stride=8, kernel_size=16, segment_ms=96.0, num_spks=2)
    _, seg_types, evaluation = _segment_types(batch, 100, hp)
    assert np.array_equal(training, evaluation)
    assert {0, 1, 2} <= set(seg_types.tolist())  # silence, one speaker and overlap all occur
    # the cached labels are webrtcvad's labels of the placed sources
    for k in range(2):
        fresh = speech_activity(targets[0, :, k].numpy(), SR)
        assert (fresh == labels[0, :, k].numpy().astype(bool)).mean() > 0.97


# -------------------------------------------------------------- eq. (20)
def test_signal_dependent_weights_hand_computed():
    a, b = 0.05, 30.0
    seg = torch.tensor([[[40.0, 40.0], [29.9, 50.0], [30.0, 30.0], [60.0, 60.0], [36.0, 34.0]]])
    active = torch.ones_like(seg, dtype=torch.bool)
    # eq. 20 as printed: min(exp(a (x - b) - 1), 1), e^-1 at the threshold
    w = signal_dependent_weights(seg, active, a, b)
    expected = torch.tensor([[math.exp(0.5 - 1), math.exp(a * 9.95 - 1), math.exp(-1), 1.0, math.exp(0.25 - 1)]])
    assert w.shape == (1, 5)
    assert torch.allclose(w, expected)
    # the continuous reading: min(exp(a (x - b)) - 1, 1), 0 at the threshold
    w = signal_dependent_weights(seg, active, a, b, form="continuous")
    expected = torch.tensor([[math.exp(0.5) - 1, math.exp(a * 9.95) - 1, 0.0, 1.0, math.exp(0.25) - 1]])
    assert torch.allclose(w, expected)
    # Segment 1 averages over sources first: (29.9 + 50) / 2 = 39.95 >= b.
    # w reaches 1 at b + 1 / a (printed) or b + ln(2) / a (continuous) and stays there.
    for form, reach in (("printed", 1 / a), ("continuous", math.log(2) / a)):
        edge = torch.tensor([[[b + reach - 0.5] * 2, [b + reach] * 2, [b + 100.0] * 2]])
        w_edge = signal_dependent_weights(edge, torch.ones_like(edge, dtype=torch.bool), a, b, form=form)
        assert w_edge[0, 0] < 1 and torch.allclose(w_edge[0, 1:], torch.ones(2))
    with pytest.raises(ValueError, match="form"):
        signal_dependent_weights(seg, active, form="exp")


def test_signal_dependent_weights_below_b_silence_and_single_speaker():
    seg = torch.tensor([[[10.0, 45.0], [40.0, -80.0], [-80.0, 40.0], [0.0, 0.0]]])
    active = torch.tensor([[[True, True], [True, False], [False, True], [False, False]]])
    w = signal_dependent_weights(seg, active, a=0.05, b=30.0)
    single = math.exp(0.05 * 10.0 - 1)
    # mean 27.5 < b -> 0; single speakers use their own score; silence -> 1
    assert torch.allclose(w, torch.tensor([[0.0, single, single, 1.0]]))


def test_signal_dependent_weights_carry_no_gradient():
    seg = torch.full((1, 4, 2), 40.0, requires_grad=True)
    w = signal_dependent_weights(seg, torch.ones(1, 4, 2, dtype=torch.bool))
    assert not w.requires_grad


# --------------------------------------------------------- segment → frame
def test_segments_to_frames_constant():
    values = torch.full((2, 19), 0.7)
    frames = segments_to_frames(values, 999, 8, 16, SR)
    assert frames.shape == (2, 999)
    assert torch.allclose(frames, torch.full_like(frames, 0.7))


def test_segments_to_frames_step():
    # Segments 0-4 are 0 and 5-9 are 1. Segment s covers [384 s, 384 s + 768).
    values = (torch.arange(10) >= 5).float().unsqueeze(0)
    frames = segments_to_frames(values, 600, 8, 16, SR)[0]
    centres = torch.arange(600) * 8 + 8
    # Centres before 1920 (start of segment 5) only see zeros; those in
    # [1920, 1920 + 384) = end of segment 4 see one 0 and one 1; later ones
    # see only ones, also past the last segment (ends at 4224).
    expected = torch.where(
        centres < 1920,
        torch.tensor(0.0),
        torch.where(centres < 2304, torch.tensor(0.5), torch.tensor(1.0)),
    )
    assert torch.equal(frames, expected)
    assert (centres > 4224).any()


# -------------------------------------------------------------- eq. (18)
def test_complexity_loss_all_min_is_zero():
    u = torch.full((2, 50), 0.125, requires_grad=True)
    assert complexity_loss(u, 0.125).item() == 0.0


def test_complexity_loss_value_and_gradient():
    u = torch.tensor([[0.125, 1.0], [0.5, 1.0]], requires_grad=True)
    loss = complexity_loss(u, 0.125)
    assert loss.item() == pytest.approx((0.875**2 * 2 + 0.375**2) / 4)
    loss.backward()
    assert torch.allclose(u.grad, 2 * (u.detach() - 0.125) / 4)


def test_complexity_loss_sd_weights_scale_frames():
    u = torch.tensor([[0.125, 1.0], [0.5, 1.0]], requires_grad=True)
    w = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    loss = complexity_loss(u, 0.125, w)
    assert loss.item() == pytest.approx((0.5 * 0.375**2 + 0.875**2) / 4)
    assert loss.item() < complexity_loss(u, 0.125).item()
    loss.backward()
    assert u.grad[0, 1] == 0.0 and u.grad[1, 1] > 0.0
    with pytest.raises(ValueError, match="must match"):
        complexity_loss(u, 0.125, torch.ones(2, 3))


def test_complexity_gradient_reaches_straight_through_gate():
    levels = torch.tensor([0.125, 1.0])
    logits = torch.randn(1, 40, 2, requires_grad=True)
    probs = logits.softmax(-1)
    hard = torch.nn.functional.one_hot(probs.argmax(-1), 2).float()
    gate = hard - probs.detach() + probs  # straight-through
    utilization = gate @ levels
    complexity_loss(utilization, 0.125).backward()
    assert logits.grad.abs().sum() > 0


# -------------------------------------------------------------- eq. (19)
def _batch(frames=999):
    targets = torch.randn(2, 8000, 2)
    targets[0, 4000:, 1] = 0.0  # single-speaker half
    estimates = targets + 0.01 * torch.randn_like(targets)  # ~40 dB
    estimates = estimates[..., [1, 0]].requires_grad_()
    utilization = torch.rand(2, frames, requires_grad=True)
    return estimates, targets, utilization


def test_dsn_loss_outputs_and_backward():
    estimates, targets, utilization = _batch()
    out = dsn_loss(estimates, targets, utilization, (0.125, 1.0), alpha=0.5)
    assert set(out) == {"loss", "si_sdr_loss", "complexity", "weights"}
    assert out["weights"].shape == (2, 999)
    assert ((out["weights"] >= 0) & (out["weights"] <= 1)).all()
    for key in ("loss", "si_sdr_loss", "complexity"):
        assert out[key].dim() == 0 and torch.isfinite(out[key])
    assert torch.allclose(out["loss"], out["si_sdr_loss"] + 0.5 * out["complexity"])
    expected_pit, _ = pit_si_sdr(estimates, targets)
    assert torch.allclose(out["si_sdr_loss"], expected_pit.mean())
    out["loss"].backward()
    assert estimates.grad.abs().sum() > 0
    assert utilization.grad.abs().sum() > 0


def test_dsn_loss_si_and_sd_differ():
    estimates, targets, utilization = _batch()
    si = dsn_loss(estimates, targets, utilization, (0.125, 1.0), weighting="si")
    sd = dsn_loss(estimates, targets, utilization, (0.125, 1.0), weighting="sd")
    assert si["weights"] is None
    assert torch.allclose(si["complexity"], complexity_loss(utilization, 0.125))
    assert torch.allclose(sd["complexity"], complexity_loss(utilization, 0.125, sd["weights"]))
    # ~40 dB estimates: eq. (20) weights lie strictly between 0 and 1.
    assert sd["complexity"] < si["complexity"]
    assert torch.equal(si["si_sdr_loss"], sd["si_sdr_loss"])


def test_dsn_loss_sd_uses_pit_reordered_estimates():
    # Swapped estimates must get the same weights as ordered ones.
    estimates, targets, utilization = _batch()
    swapped = dsn_loss(estimates, targets, utilization, (0.125, 1.0))
    ordered = dsn_loss(estimates[..., [1, 0]], targets, utilization, (0.125, 1.0))
    assert torch.allclose(swapped["weights"], ordered["weights"])
    assert (swapped["weights"] > 0).all()


def test_dsn_loss_without_utilization():
    estimates, targets, _ = _batch()
    out = dsn_loss(estimates, targets, None, (0.125, 1.0), alpha=10.0)
    assert out["complexity"].item() == 0.0
    assert out["complexity"].device == estimates.device
    assert out["weights"] is None
    assert torch.equal(out["loss"], out["si_sdr_loss"])


def test_dsn_loss_rejects_bad_inputs():
    estimates, targets, utilization = _batch()
    with pytest.raises(ValueError, match="weighting"):
        dsn_loss(estimates, targets, utilization, (0.125, 1.0), weighting="xx")
    with pytest.raises(ValueError, match="same shape"):
        dsn_loss(estimates[:, :-1], targets, utilization, (0.125, 1.0))
    with pytest.raises(ValueError, match="utilization"):
        dsn_loss(estimates, targets, utilization[:1], (0.125, 1.0))


# ------------------------------------------------------ 1 and 3 sources
@pytest.mark.parametrize("num_spks", [1, 2, 3])
def test_dsn_loss_of_n_sources_is_permutation_invariant(num_spks):
    targets = torch.randn(2, 4000, num_spks)
    # a different error level per source: estimate j matches target j only
    estimates = targets + torch.randn_like(targets) * torch.linspace(0.01, 0.2, num_spks)
    labels = torch.ones_like(targets)
    labels[:, :1000] = 0.0  # a silent start: weight 1 there
    utilization = torch.full((2, 499), 0.5)
    common = dict(levels=(0.125, 1.0), weighting="sd", b=10.0, activity=labels)
    right = dsn_loss(estimates, targets, utilization, **common)
    for perm in ([1, 2, 0], [2, 1, 0], [0]):
        if sorted(perm) != list(range(num_spks)):
            continue
        permuted = dsn_loss(estimates[..., perm], targets, utilization, **common)
        assert torch.allclose(permuted["loss"], right["loss"]) and torch.allclose(permuted["weights"], right["weights"])
    expected_si_sdr = get_si_snr_with_pitwrapper(targets, estimates).mean()
    assert torch.allclose(right["si_sdr_loss"], expected_si_sdr)
    assert torch.all(right["weights"][:, :40] == 1.0)  # frames of silent segments
    seg = segmental_si_sdr(estimates, targets, SR)
    active = segment_activity(labels, SR)
    score = seg.mean(-1)  # speech segments: the mean over all (active) sources
    expected = torch.clamp(torch.exp(0.05 * (score - 10.0) - 1), max=1.0) * (score >= 10.0)
    assert torch.allclose(signal_dependent_weights(seg, active, b=10.0)[:, 4:], expected[:, 4:])
