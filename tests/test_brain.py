import types

import pytest
import speechbrain as sb
import torch

from speechbrain_dsn.brain import DSNBrain
from speechbrain_dsn.model import DSNSepformer

TINY = dict(encoder_out_nchannels=16, masknet_chunksize=10, intra_numlayers=1, inter_numlayers=1,
            intra_nhead=2, inter_nhead=2, intra_dffn=32, inter_dffn=32, dropout=0.0)


def _brain(levels, **hparams):
    model = DSNSepformer(**TINY, utilization_levels=levels)
    modules = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
    hp = dict(num_spks=2, utilization_levels=list(levels), kernel_size=16, kernel_stride=8, sample_rate=8000,
              alpha=1.0, weighting="si", gating_dropout=0.0)
    hp.update(hparams)
    return DSNBrain(modules, opt_class=lambda p: torch.optim.Adam(p, 1e-3), hparams=hp)


class _Batch(types.SimpleNamespace):
    def to(self, device):
        return self


def _batch(T=1600):
    s1, s2 = torch.randn(2, T), torch.randn(2, T)
    return _Batch(mix_sig=(s1 + s2, None), s1_sig=(s1, None), s2_sig=(s2, None))


def test_objective_reaches_the_gate_and_counts_utilization():
    brain = _brain((0.25, 1.0))
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.modules.train()
    loss = brain.compute_objectives(brain.compute_forward(_batch(), sb.Stage.TRAIN), _batch(), sb.Stage.TRAIN)
    loss.backward()
    assert brain.modules.masknet.gating.classifier.weight.grad.abs().sum() > 0
    stats = brain.stage_statistics(float(loss))
    assert stats["share_u0.25"] + stats["share_u1"] == pytest.approx(1.0)
    assert 0.25 <= stats["avg_utilization"] <= 1.0 and stats["complexity"] > 0


def test_gating_dropout_applies_one_level_to_all_frames_and_skips_complexity():
    brain = _brain((0.25, 0.5, 1.0), gating_dropout=1.0)
    brain.modules.train()
    seen = set()
    for _ in range(12):
        est, targets, utilization = brain.compute_forward(_batch(), sb.Stage.TRAIN)
        used = brain.modules.masknet.last_utilization
        assert utilization is None and brain.modules.masknet.last_gates is None
        assert used.unique().numel() == 1
        seen.add(float(used[0, 0]))
    assert seen == {0.25, 0.5, 1.0}  # drawn uniformly from the set


def test_no_gating_dropout_outside_training():
    brain = _brain((0.25, 1.0), gating_dropout=1.0)
    brain.modules.eval()
    _, _, utilization = brain.compute_forward(_batch(), sb.Stage.VALID)
    assert utilization is not None and brain.modules.masknet.last_gates is None


def test_static_network_trains_with_pit_loss_only():
    brain = _brain((0.5,), weighting="sd")
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.modules.train()
    batch = _batch()
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    assert predictions[2] is None
    loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    assert brain.stage_statistics(float(loss))["complexity"] == 0.0


def test_permuted_perfect_estimates_give_optimal_loss():
    brain = _brain((1.0,))
    brain.on_stage_start(sb.Stage.TEST)
    batch = _batch()
    brain.compute_forward(batch, sb.Stage.TEST)
    targets = torch.stack([batch.s1_sig[0], batch.s2_sig[0]], -1)
    loss = brain.compute_objectives((targets.flip(-1), targets, None), batch, sb.Stage.TEST)
    assert float(loss) < -60  # -SI-SDR of a perfect estimate
