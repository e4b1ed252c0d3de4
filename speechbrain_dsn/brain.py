"""SpeechBrain ``Brain`` for training the dynamic slimmable SepFormer.

Implements the optimisation of Sections III-F and IV-C: the PIT SI-SDR loss
plus alpha times the complexity loss (eqs. 17-20), with gating dropout (with
probability ``gating_dropout`` the predicted gates are ignored and one
uniformly drawn level is applied to all frames).  Only ``compute_forward``,
``compute_objectives`` and the stage hooks are overridden, so SpeechBrain's
``fit_batch`` (gradient accumulation, AMP, DDP ``no_sync``, gradient clipping
with ``max_grad_norm``, non-finite loss checks) keeps working.

The test stage (per-condition, per-gating-mode evaluation, plots and the
inference folder) lives in :mod:`speechbrain_dsn.evaluation_stage`.
"""

import os
import pathlib
from typing import Optional, Union

import speechbrain as sb
import torch
import yaml

from .losses import dsn_loss
from .model import separate, unwrap

__all__ = ["DSNBrain"]


@sb.utils.checkpoints.register_checkpoint_hooks
class DSNBrain(sb.Brain):
    """Trains encoder, DSN masker and decoder (``modules`` of the recipe YAML).

    Reads the hyperparameters of :data:`HPARAMS` (all required: a missing one
    is an error naming it, not a default in code) plus ``lr_scheduler``,
    ``epoch_counter`` and ``train_logger`` when it trains.

    Example
    -------
    >>> import torch
    >>> from speechbrain_dsn.model import DSNSepformer
    >>> model = DSNSepformer.paper_config([0.5, 1.0], N_encoder_out=16, chunk_size=10, num_dual_blocks=1,
    ...                                   num_layers=1, nhead=2, d_ffn=32)
    >>> modules = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
    >>> hparams = dict(num_spks=2, sample_rate=8000, kernel_size=16, kernel_stride=8, alpha=1.0, weighting="sd",
    ...                sd_a=0.05, sd_b=30.0, sd_form="printed", segment_ms=96.0, gating_dropout=0.3,
    ...                alpha_warmup_epochs=0, full_width_warmup_epochs=0, step_log=None)
    >>> brain = DSNBrain(modules, hparams=hparams)
    >>> brain.separate(torch.randn(1, 800), utilization=0.5).shape
    torch.Size([1, 800, 2])
    """

    #: Hyperparameters read by the brain (see ``hparams/dsn_3level.yaml``).
    HPARAMS = (
        "num_spks",
        "sample_rate",
        "kernel_size",
        "kernel_stride",
        "alpha",
        "weighting",
        "sd_a",
        "sd_b",
        "sd_form",
        "segment_ms",
        "gating_dropout",
        "alpha_warmup_epochs",
        "full_width_warmup_epochs",
        "step_log",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        missing = [k for k in self.HPARAMS if not hasattr(self.hparams, k)]
        if missing:
            raise KeyError(f"DSNBrain needs the hyperparameters {missing} (see hparams/dsn_3level.yaml)")
        # --debug points each process's checkpointer at its own temporary folder; under
        # DDP the processes then disagree on the checkpoints to delete and deadlock in
        # Checkpointer.delete_checkpoints.  All processes use the main process's folder.
        if self.debug and self.distributed_launch and getattr(self.checkpointer, "tempdir", None) is not None:
            folder = sb.utils.distributed.ddp_broadcast(str(self.checkpointer.checkpoints_dir))
            self.checkpointer.checkpoints_dir = pathlib.Path(folder)

    @property
    def masknet(self):
        """The DSN masker, unwrapped from DDP (torchrun): read its attributes here."""
        return unwrap(self.modules.masknet)

    @property
    def levels(self):
        """The utilization levels of the masker, sorted."""
        return self.masknet.utilization_levels

    @property
    def is_dynamic(self) -> bool:
        """True when the masker has a gating module (more than one level)."""
        return len(self.levels) > 1

    def separate(self, mix: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None):
        """Encoder -> masker -> decoder; returns estimates [B, T, num_spks].

        Runs the modules unwrapped from DDP, as the test stage does on the
        main process alone; the training and validation steps of
        ``compute_forward`` go through ``self.modules`` (DDP under torchrun).

        Arguments
        ---------
        mix : torch.Tensor
            Mixtures [B, T].
        utilization : float or torch.Tensor, optional
            External gating (a level, or [B, frames] levels); None for the
            gating module.

        Returns
        -------
        torch.Tensor
            Estimated sources [B, T, num_spks].
        """
        return separate(*(unwrap(self.modules[k]) for k in ("encoder", "masknet", "decoder")), mix, utilization)

    def _in_full_width_warmup(self) -> bool:
        """True in the first ``full_width_warmup_epochs`` training epochs (0 in the paper)."""
        warmup = self.hparams.full_width_warmup_epochs
        return self.is_dynamic and warmup > 0 and self.hparams.epoch_counter.current <= warmup

    def _gating_dropout(self) -> Optional[float]:
        """A level for all frames with probability ``gating_dropout`` (Section IV-C).

        During a full-width warm-up (``full_width_warmup_epochs``, not in the
        paper) every training step runs the highest level, as if the DSN were
        initialised from a trained SepFormer; the gate starts learning after it.
        """
        if self._in_full_width_warmup():
            return self.levels[-1]
        p = self.hparams.gating_dropout
        if not self.is_dynamic or p <= 0 or float(torch.rand(())) >= p:
            return None
        return self.levels[int(torch.randint(len(self.levels), ()))]

    def compute_forward(self, batch, stage):
        """Separates the batch; returns (estimates, targets, utilization for the loss)."""
        batch = batch.to(self.device)
        mix, _ = batch.mix_sig
        # [B, T, spks]
        targets = torch.stack([getattr(batch, f"s{i + 1}_sig")[0] for i in range(self.hparams.num_spks)], dim=-1)
        external = self._gating_dropout() if stage == sb.Stage.TRAIN else None
        est = separate(self.modules.encoder, self.modules.masknet, self.modules.decoder, mix, external)
        # Under gating dropout the gates were ignored, so eq. 18 has nothing to penalise.
        utilization = self.masknet.last_utilization if self.is_dynamic and external is None else None
        return est, targets, utilization

    def compute_objectives(self, predictions, batch, stage):
        """Eq. 19: PIT SI-SDR + alpha * complexity (SI or SD weighting)."""
        est, targets, utilization = predictions
        hp = self.hparams
        out = dsn_loss(
            est,
            targets,
            utilization,
            self.levels,
            alpha=self.alpha(stage),
            weighting=hp.weighting,
            a=hp.sd_a,
            b=hp.sd_b,
            sample_rate=hp.sample_rate,
            frame_hop=hp.kernel_stride,
            frame_length=hp.kernel_size,
            segment_ms=hp.segment_ms,
            activity=self._labels(batch),
            sd_form=hp.sd_form,
        )
        if torch.isfinite(out["loss"]):  # a non-finite batch is skipped (skip_nonfinite_grads), not counted
            self._track(out, self.masknet.last_utilization)
        return out["loss"]

    def alpha(self, stage=sb.Stage.TRAIN) -> float:
        """Weight of the complexity loss (eq. 19) in the current epoch.

        With ``alpha_warmup_epochs = W > 0`` it ramps linearly from 0 in epoch
        1 to ``alpha`` in epoch W + 1, so that the separator learns before the
        gate is pushed down; ``W = 0`` is the paper's constant alpha.
        Validation and test always use ``alpha``, so that validation losses
        (LR schedule, best checkpoint) stay comparable across epochs.
        """
        alpha, warmup = self.hparams.alpha, self.hparams.alpha_warmup_epochs
        if warmup <= 0 or stage != sb.Stage.TRAIN:
            return alpha
        return alpha * min(1.0, max(self.hparams.epoch_counter.current - 1, 0) / warmup)

    def _labels(self, batch) -> Optional[torch.Tensor]:
        """The batch's per-sample webrtcvad labels [B, T, spks], if it has them."""
        if not hasattr(batch, "s1_vad"):
            return None
        return torch.stack([getattr(batch, f"s{i + 1}_vad")[0] for i in range(self.hparams.num_spks)], dim=-1)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader; remembers a training dataset that draws new mixtures per epoch."""
        if stage == sb.Stage.TRAIN and hasattr(dataset, "set_epoch"):
            self._epoch_dataset = dataset
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def _track(self, out, used):
        """Accumulates the stage statistics: SI-SNR, complexity, utilization."""
        stats = self._stats
        stats["si_snr"] += -float(out["si_sdr_loss"].detach())
        stats["complexity"] += float(out["complexity"].detach())
        stats["batches"] += 1
        used = used.detach().reshape(-1)
        index = self.masknet.levels.index(used)
        stats["histogram"] += torch.bincount(index, minlength=len(self.levels)).cpu()
        stats["utilization"] += float(used.sum())

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Appends the step's loss to the CSV ``step_log``, if set (``epoch, step,
        loss, gating``).  Under DDP the loss is the mean over the processes
        (the loss of the global batch), written by the main process, and
        ``gating`` is the main process's (``internal`` or ``external_<level>``
        under gating dropout)."""
        path = self.hparams.step_log
        if not path:
            return
        loss = loss.detach().float().reshape(1).clone()
        if sb.utils.distributed.is_distributed_initialized():
            torch.distributed.all_reduce(loss)
            loss /= torch.distributed.get_world_size()
        if not sb.utils.distributed.if_main_process():
            return
        if not self.is_dynamic:
            gating = f"static_{self.levels[0]:g}"
        elif self.masknet.last_gates is not None:
            gating = "internal"
        else:
            gating = f"external_{float(self.masknet.last_utilization.reshape(-1)[0]):g}"
        counter = self.hparams.epoch_counter
        new = not os.path.exists(path)
        with open(path, "a") as fout:
            if new:
                fout.write("epoch,step,loss,gating\n")
            fout.write(f"{counter.current},{self.step},{float(loss)!r},{gating}\n")

    def on_stage_start(self, stage, epoch=None):
        """Resets the running statistics; selects the epoch's training mixtures."""
        dataset = getattr(self, "_epoch_dataset", None)
        if stage == sb.Stage.TRAIN and epoch is not None and dataset is not None:
            # before the DataLoader iterator (and its workers) is created
            dataset.set_epoch(epoch)
        self._stats = dict(
            si_snr=0.0,
            complexity=0.0,
            batches=0,
            utilization=0.0,
            histogram=torch.zeros(len(self.levels), dtype=torch.long),
        )
        resumed, self._resumed_stats = getattr(self, "_resumed_stats", None), None
        if stage == sb.Stage.TRAIN and resumed is not None and self.step > 0:
            # an epoch resumed from an intra-epoch checkpoint: its statistics so far
            self._stats = dict(resumed, histogram=torch.tensor(resumed["histogram"], dtype=torch.long))

    @sb.utils.checkpoints.mark_as_saver
    def _save(self, path):
        """SpeechBrain's step counters, plus the statistics of the running stage."""
        super()._save(path)
        stats = getattr(self, "_stats", None)
        if stats is not None:
            with open(path, encoding="utf-8") as fin:
                saved = yaml.safe_load(fin)
            saved["dsn_stats"] = dict(stats, histogram=stats["histogram"].tolist())
            with open(path, "w", encoding="utf-8") as fout:
                yaml.dump(saved, fout)

    @sb.utils.checkpoints.mark_as_loader
    def _recover(self, path, end_of_epoch):
        """SpeechBrain's step counters; in an intra-epoch checkpoint, the epoch's statistics so far."""
        super()._recover(path, end_of_epoch)
        with open(path, encoding="utf-8") as fin:
            saved = yaml.safe_load(fin)
        self._resumed_stats = None if end_of_epoch else saved.get("dsn_stats")

    def stage_statistics(self, stage_loss) -> dict:
        """Loss, SI-SNR, complexity, average utilization and level shares of the stage."""
        s = self._stats
        n, frames = max(s["batches"], 1), max(int(s["histogram"].sum()), 1)
        stats = {
            "loss": stage_loss,
            "si-snr": s["si_snr"] / n,
            "complexity": s["complexity"] / n,
            "avg_utilization": s["utilization"] / frames,
        }
        for level, count in zip(self.levels, s["histogram"].tolist()):
            stats[f"share_u{level:g}"] = count / frames
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, schedules the learning rate, checkpoints and stops early."""
        stats = self.stage_statistics(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
        elif stage == sb.Stage.VALID:
            # SpeechBrain's ReduceLROnPlateau only returns the new lr: apply it
            current_lr, next_lr = self.hparams.lr_scheduler([self.optimizer], epoch, stage_loss)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, next_lr)
            # The early-stopping state is updated before the checkpoint, which must hold it; the
            # epoch is logged after it, so that a run killed while saving logs the epoch once.
            self.hparams.epoch_counter.update_metric(stage_loss)
            self.checkpointer.save_and_keep_only(meta={"loss": stage_loss}, min_keys=["loss"])
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": current_lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )
