"""SpeechBrain ``Brain`` for training the dynamic slimmable SepFormer.

Implements the optimisation of Sections III-F and IV-C: the PIT SI-SDR loss
plus alpha times the complexity loss (eqs. 17-20), with gating dropout (with
probability ``gating_dropout`` the predicted gates are ignored and one
uniformly drawn level is applied to all frames).  Only ``compute_forward``,
``compute_objectives`` and the stage hooks are overridden, so SpeechBrain's
``fit_batch`` (gradient accumulation, AMP, DDP ``no_sync``, gradient clipping
with ``max_grad_norm``, non-finite loss checks) keeps working.

The test stage (per-condition, per-gating-mode evaluation, plots and the
inference folder) lives in :mod:`speechbrain_dsn.evaluate`.
"""

from typing import Optional, Union

import speechbrain as sb
import torch

from .losses import dsn_loss
from .model import separate

__all__ = ["DSNBrain"]


class DSNBrain(sb.Brain):
    """Trains encoder, DSN masker and decoder (``modules`` of the recipe YAML).

    Reads these hyperparameters: ``num_spks``, ``utilization_levels``,
    ``alpha``, ``weighting``, ``sd_a``, ``sd_b``, ``segment_ms``,
    ``gating_dropout``, ``sample_rate``, ``kernel_size``, ``kernel_stride``,
    ``lr_scheduler``, ``epoch_counter``, ``train_logger``.

    Example
    -------
    >>> import torch
    >>> from speechbrain_dsn.model import DSNSepformer
    >>> model = DSNSepformer(encoder_out_nchannels=16, masknet_chunksize=10,
    ...     intra_numlayers=1, inter_numlayers=1, intra_nhead=2, inter_nhead=2,
    ...     intra_dffn=32, inter_dffn=32, utilization_levels=[0.5, 1.0])
    >>> modules = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
    >>> brain = DSNBrain(modules, hparams={"num_spks": 2, "utilization_levels": [0.5, 1.0],
    ...     "kernel_size": 16, "kernel_stride": 8, "sample_rate": 8000})
    >>> brain.separate(torch.randn(1, 800), utilization=0.5).shape
    torch.Size([1, 800, 2])
    """

    @property
    def levels(self):
        """The utilization levels of the masker, sorted."""
        return self.modules.masknet.utilization_levels

    @property
    def is_dynamic(self) -> bool:
        """True when the masker has a gating module (more than one level)."""
        return len(self.levels) > 1

    def separate(self, mix: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None):
        """Encoder -> masker -> decoder; returns estimates [B, T, num_spks].

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
        return separate(self.modules.encoder, self.modules.masknet, self.modules.decoder, mix, utilization)

    def _gating_dropout(self) -> Optional[float]:
        """A level for all frames with probability ``gating_dropout`` (Section IV-C)."""
        p = getattr(self.hparams, "gating_dropout", 0.0)
        if not self.is_dynamic or p <= 0 or float(torch.rand(())) >= p:
            return None
        return self.levels[int(torch.randint(len(self.levels), ()))]

    def compute_forward(self, batch, stage):
        """Separates the batch; returns (estimates, targets, utilization for the loss)."""
        batch = batch.to(self.device)
        mix, _ = batch.mix_sig
        # [B, T, spks]
        targets = torch.stack(
            [getattr(batch, f"s{i + 1}_sig")[0] for i in range(self.hparams.num_spks)], dim=-1
        )
        external = self._gating_dropout() if stage == sb.Stage.TRAIN else None
        est = self.separate(mix, utilization=external)
        # Under gating dropout the gates were ignored, so eq. 18 has nothing to penalise.
        utilization = self.modules.masknet.last_utilization if self.is_dynamic and external is None else None
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
            alpha=getattr(hp, "alpha", 1.0),
            weighting=getattr(hp, "weighting", "sd"),
            a=getattr(hp, "sd_a", 0.05),
            b=getattr(hp, "sd_b", 30.0),
            sample_rate=hp.sample_rate,
            frame_hop=hp.kernel_stride,
            frame_length=hp.kernel_size,
            segment_ms=getattr(hp, "segment_ms", 96.0),
        )
        self._track(out, self.modules.masknet.last_utilization)
        return out["loss"]

    def _track(self, out, used):
        """Accumulates the stage statistics: SI-SNR, complexity, utilization."""
        stats = self._stats
        stats["si_snr"] += -float(out["si_sdr_loss"].detach())
        stats["complexity"] += float(out["complexity"].detach())
        stats["batches"] += 1
        used = used.detach().reshape(-1)
        levels = torch.tensor(self.levels, device=used.device)
        index = (used[:, None] - levels).abs().argmin(-1)
        stats["histogram"] += torch.bincount(index, minlength=len(self.levels)).cpu()
        stats["utilization"] += float(used.sum())

    def on_stage_start(self, stage, epoch=None):
        """Resets the running statistics."""
        self._stats = dict(si_snr=0.0, complexity=0.0, batches=0, utilization=0.0,
                           histogram=torch.zeros(len(self.levels), dtype=torch.long))

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
            current_lr, next_lr = self.hparams.lr_scheduler([self.optimizer], epoch, stage_loss)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": current_lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"loss": stage_loss}, min_keys=["loss"])
            self.hparams.epoch_counter.update_metric(stage_loss)
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )
