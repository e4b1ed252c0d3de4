import types

import pytest
import speechbrain as sb
import torch

from speechbrain_dsn.brain import DSNBrain

from .conftest import BRAIN_HPARAMS, MICRO_MODEL, tiny_model


def _brain(levels, **hparams):
    model = tiny_model(levels, **MICRO_MODEL)
    modules = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
    hp = dict(BRAIN_HPARAMS, weighting="si", gating_dropout=0.0)
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


def _drive_epochs(brain, valid_losses):
    """Runs the TRAIN and VALID stage-end hooks for each epoch; returns the optimizer's lr after each."""
    lrs = []
    for epoch, loss in enumerate(valid_losses, start=1):
        brain.on_stage_start(sb.Stage.TRAIN, epoch)
        brain.on_stage_end(sb.Stage.TRAIN, 0.0, epoch)
        brain.on_stage_start(sb.Stage.VALID, epoch)
        brain.on_stage_end(sb.Stage.VALID, loss, epoch)
        lrs.append(brain.optimizer.param_groups[0]["lr"])
    return lrs


def test_lr_halves_in_the_optimizer_after_six_epochs_without_improvement(tmp_path):
    """Section IV-C: the lr is halved if the validation loss did not decrease for 6 consecutive epochs."""
    from speechbrain.nnet.schedulers import ReduceLROnPlateau
    from speechbrain.utils.checkpoints import Checkpointer
    from speechbrain.utils.epoch_loop import EpochCounterWithStopper
    from speechbrain.utils.train_logger import FileTrainLogger

    from speechbrain_dsn.recipe import load_hparams

    # the scheduler exactly as the recipe YAML builds it
    hp = load_hparams(
        "hparams/dsn_2level.yaml",
        {
            "output_folder": str(tmp_path),
            "N_encoder_out": 16,
            "num_layers": 1,
            "nhead": 2,
            "d_ffn": 32,
            "chunk_size": 10,
        },
    )
    scheduler = hp["lr_scheduler"]
    assert isinstance(scheduler, ReduceLROnPlateau)
    brain = _brain(
        (0.25, 1.0),
        lr_scheduler=scheduler,
        epoch_counter=EpochCounterWithStopper(200, limit_to_stop=30, limit_warmup=0, direction="min"),
        train_logger=FileTrainLogger(str(tmp_path / "log.txt")),
    )
    brain.checkpointer = Checkpointer(str(tmp_path / "ckpt"), {"scheduler": scheduler})
    brain.init_optimizers()
    lr0 = brain.optimizer.param_groups[0]["lr"]
    # epoch 1 sets the best loss; epochs 2.. never improve on it
    lrs = _drive_epochs(brain, [1.0] + [1.0 + 0.1 * k for k in range(1, 13)])
    assert lrs[:6] == [lr0] * 6  # epochs 1-6: 5 epochs without improvement
    assert lrs[6] == pytest.approx(lr0 / 2)  # epoch 7: the 6th epoch without improvement
    assert lrs[7:12] == [lr0 / 2] * 5 and lrs[12] == pytest.approx(lr0 / 4)  # another 6 epochs
    # an improvement resets the count
    lrs = _drive_epochs(brain, [0.1] + [0.2] * 5)
    assert lrs[-1] == pytest.approx(lr0 / 4)


def test_complexity_weight_warms_up_in_training_only():
    from speechbrain.utils.epoch_loop import EpochCounter

    counter = EpochCounter(10)
    brain = _brain((0.25, 1.0), alpha=2.0, alpha_warmup_epochs=4, epoch_counter=counter)
    seen = []
    for _ in counter:
        seen.append((brain.alpha(sb.Stage.TRAIN), brain.alpha(sb.Stage.VALID)))
    assert [t for t, _ in seen[:6]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert all(v == 2.0 for _, v in seen)
    assert _brain((0.25, 1.0), alpha=2.0, epoch_counter=EpochCounter(3)).alpha() == 2.0  # the paper's


def test_batch_vad_labels_decide_the_silent_segments():
    """With labels saying 'nobody speaks', every frame is silence: weight 1 (eq. 20), whatever the energy."""
    brain = _brain((0.25, 1.0), weighting="sd", sd_a=0.05, sd_b=30.0)
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.modules.train()
    batch = _batch()
    batch.s1_vad = (torch.zeros(2, 1600), None)
    batch.s2_vad = (torch.zeros(2, 1600), None)
    est, targets, utilization = brain.compute_forward(batch, sb.Stage.TRAIN)
    from speechbrain_dsn.losses import complexity_loss

    brain.compute_objectives((est, targets, utilization), batch, sb.Stage.TRAIN)
    expected = complexity_loss(utilization, 0.25, torch.ones_like(utilization))
    assert brain._stats["complexity"] == pytest.approx(float(expected), rel=1e-5)
    batch.s1_vad = (torch.ones(2, 1600), None)  # now both speak: segSI-SDR < b, weight 0
    batch.s2_vad = (torch.ones(2, 1600), None)
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.compute_objectives((est, targets, utilization), batch, sb.Stage.TRAIN)
    assert brain._stats["complexity"] == 0.0


def test_full_width_warmup_runs_the_highest_level_then_hands_over_to_the_gate():
    from speechbrain.utils.epoch_loop import EpochCounter

    counter = EpochCounter(4)
    brain = _brain((0.25, 1.0), full_width_warmup_epochs=2, epoch_counter=counter)
    brain.modules.train()
    seen = []
    for _ in counter:
        _, _, utilization = brain.compute_forward(_batch(), sb.Stage.TRAIN)
        used = brain.modules.masknet.last_utilization
        seen.append((utilization is None, bool((used == 1.0).all())))
    assert seen[:2] == [(True, True), (True, True)]  # no gate, no complexity term
    assert [gated for gated, _ in seen[2:]] == [False, False]
    _, _, utilization = brain.compute_forward(_batch(), sb.Stage.VALID)
    assert utilization is not None
