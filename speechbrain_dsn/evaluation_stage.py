"""Test stage of the recipe: runs the test sets for the paper's evaluations (Section V).

This module owns the loop over test conditions, utterances and gating modes;
the metrics are :mod:`speechbrain_dsn.metrics` and
:mod:`speechbrain_dsn.segment_types`, the files :mod:`speechbrain_dsn.reports`.

For every test condition (overlap ratio, noise activity, and ``official``,
the released test set of the corpus) and every gating
mode (internal gating, and external gating at each level, Table II) it
measures per utterance the SI-SDRi, the BSS-eval SDRi (as published SepFormer
results report; same source assignment as the SI-SDRi), the average
utilization and the effective GMAC/s, and per segment type (silence / one
speaker / overlap, from webrtcvad labels of the references) the share of each
level (Figs. 9, 15) and the segSI-SDR (Figs. 11, 16).  Mixtures have
``num_spks`` sources (hparams key): one source (speech enhancement) has no
overlap segments.  It writes, under ``output_folder``:

* ``test_results.csv`` (per utterance, with ``si_sdri_s1`` ...
  ``si_sdri_s{num_spks}`` per source; ``sdr``/``sdri`` are empty when no
  reference has speech) and ``test_summary.csv`` (per condition x gating
  mode, plus the mean over the overlap/noise conditions as ``all``, which
  leaves ``official`` out: it is another test set, reported on its own);
* ``utilization_by_segment.csv`` and ``segsdr_by_segment.csv``;
* ``plots/utilization_<condition>_<id>.png`` (Figs. 6, 8) and
  ``plots/tradeoff.png`` (Fig. 10);
* ``audio_results/<condition>/<gating>/`` separated audio (``save_audio``):
  ``<ID>_source{j}hat.wav`` for each of the ``num_spks`` estimates.
"""

import logging
import os
from collections import defaultdict
from typing import Optional

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.dataio import write_audio

from .complexity import gating_gmacs, level_gmacs, track_gmacs
from .data.vad import speech_activity
from .metrics import sdr_improvement, si_sdr_improvement
from .plotting import plot_utilization
from .reports import write_reports
from .segment_types import SEGMENT_TYPES, frame_segment_types, segment_type_names
from .segmental import segment_activity, segmental_si_sdr

logger = logging.getLogger(__name__)

__all__ = ["evaluate_test_sets", "gating_modes"]


def _finite(value):
    """A float, or None (an empty cell, skipped by the means) for NaN."""
    value = float(value)
    return value if np.isfinite(value) else None


def gating_modes(levels):
    """Gating modes to evaluate: internal plus external at each level (Table II).

    Example
    -------
    >>> gating_modes((0.125, 1.0))
    [('internal', None), ('external_0.125', 0.125), ('external_1', 1.0)]
    >>> gating_modes((0.5,))
    [('static_0.5', None)]
    """
    if len(levels) == 1:
        return [(f"static_{levels[0]:g}", None)]
    return [("internal", None)] + [(f"external_{u:g}", u) for u in levels]


def _level_costs(brain, seconds):
    """GMAC/s at each level, and the gating module's own GMAC/s."""
    rate = brain.hparams.sample_rate
    costs = level_gmacs(brain.modules, seconds, rate)
    gating = gating_gmacs(brain.modules, seconds, rate) if brain.is_dynamic else 0.0
    return costs, gating


def _references(batch, num_spks: int) -> torch.Tensor:
    """The batch's ``num_spks`` reference sources of its first utterance, [T, C]."""
    missing = [f"s{i}_sig" for i in range(1, num_spks + 1) if not hasattr(batch, f"s{i}_sig")]
    if missing:
        raise ValueError(
            f"the test batch has no {', '.join(missing)}, but num_spks is {num_spks}; "
            f"prepare the test sets with num_spks: {num_spks}"
        )
    return torch.stack([getattr(batch, f"s{i}_sig")[0][0] for i in range(1, num_spks + 1)], -1)


def _segment_types(batch, num_frames, hp):
    """Frame types, 96 ms segment types and per-segment source activity [S, C].

    From the per-sample webrtcvad labels of the ``hp.num_spks`` references:
    the batch's ``s1_vad`` ... (cached per source file) when it has them,
    else webrtcvad run on the references; segments use the rule of the
    training loss (:func:`~speechbrain_dsn.segmental.segment_activity`).
    Two or more active sources are overlap (type 2)."""
    num_spks = hp.num_spks
    refs = _references(batch, num_spks)
    if hasattr(batch, "s1_vad"):
        active = [getattr(batch, f"s{i}_vad")[0][0].cpu().numpy() > 0.5 for i in range(1, num_spks + 1)]
    else:
        active = [speech_activity(refs[:, i].cpu().numpy(), hp.sample_rate) for i in range(num_spks)]
    frames = frame_segment_types(active, num_frames, hp.kernel_stride, hp.kernel_size)
    # [1, T, C] -> [S, C]
    labels = torch.from_numpy(np.stack(active, -1)[None].astype(np.float32))
    seg_active = segment_activity(labels, hp.sample_rate, hp.segment_ms)[0].numpy()
    seg_types = np.minimum(seg_active.sum(-1), len(SEGMENT_TYPES) - 1)
    return np.asarray(frames), seg_types, seg_active


def evaluate_test_sets(brain, test_sets: dict, output_folder: str, min_key: Optional[str] = "loss"):
    """Runs the test stage over every condition and gating mode.

    Arguments
    ---------
    brain : DSNBrain
        A trained (or being trained) brain; its best checkpoint is loaded.
    test_sets : dict
        Condition name to dataset (items with ``mix_sig``, ``s1_sig`` ...
        ``s{num_spks}_sig``).
    output_folder : str
        Where the CSVs, plots and audio go.
    min_key : str, optional
        Checkpoint metadata key selecting the best checkpoint; None loads
        the most recent one (``test_checkpoint: last`` in the recipe).

    Returns
    -------
    list of dict
        The rows of ``test_summary.csv``.
    """
    hp = brain.hparams
    brain.on_evaluate_start(min_key=min_key)
    brain.modules.eval()
    costs, gating_cost = _level_costs(brain, hp.gmacs_seconds)
    modes = gating_modes(brain.levels)
    segment_names = segment_type_names(hp.num_spks)
    rows, share_counts, seg_scores = [], defaultdict(lambda: np.zeros(len(brain.levels))), defaultdict(list)
    plots = os.path.join(output_folder, "plots")
    for condition, dataset in test_sets.items():
        loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=1)
        for i, batch in enumerate(loader):
            if brain.debug and i >= brain.debug_batches:
                break
            batch = batch.to(brain.device)
            mix = batch.mix_sig[0]
            # [1, T, C]
            targets = _references(batch, hp.num_spks)[None]
            # encoder frames of the (unpadded) Conv1d encoder
            num_frames = (mix.shape[-1] - hp.kernel_size) // hp.kernel_stride + 1
            frame_types, seg_types, seg_active = _segment_types(batch, num_frames, hp)
            mixture_sdr = None  # the mixture's BSS-eval SDR, computed once per utterance
            for mode, utilization in modes:
                with torch.no_grad():
                    est = brain.separate(mix, utilization=utilization)
                used = brain.masknet.last_utilization[0].cpu()
                metrics = si_sdr_improvement(est, targets, mix)
                sdr = sdr_improvement(metrics["estimates_reordered"], targets, mix, mixture_sdr=mixture_sdr)
                mixture_sdr = sdr["mixture_sdr_per_source"]
                gmacs = track_gmacs(costs, used) + (gating_cost if mode == "internal" else 0.0)
                rows.append(
                    dict(
                        condition=condition,
                        gating=mode,
                        ID=batch.id[0],
                        overlap=float(batch.overlap[0]) if hasattr(batch, "overlap") else None,
                        si_sdr=float(metrics["si_sdr"].mean()),
                        si_sdri=float(metrics["si_sdri"].mean()),
                        sdr=_finite(sdr["sdr"].mean()),
                        sdri=_finite(sdr["sdri"].mean()),
                        avg_utilization=float(used.mean()),
                        gmacs=gmacs,
                        **{
                            f"si_sdri_s{j + 1}": float(value)
                            for j, value in enumerate(metrics["si_sdri_per_source"][0])
                        },
                    )
                )
                index = brain.masknet.levels.index(used).numpy()
                for t, name in enumerate(segment_names):
                    share_counts[(condition, mode, name)] += np.bincount(
                        index[frame_types == t], minlength=len(brain.levels)
                    )
                seg = segmental_si_sdr(metrics["estimates_reordered"], targets, hp.sample_rate)[0].cpu().numpy()
                n = min(len(seg), len(seg_types))
                # segSI-SDR_t: mean over the active sources (Section III-G);
                # segments where no source speaks have no meaningful score
                weights = seg_active[:n].astype(float)
                speech = weights.sum(-1) > 0
                scores = (seg[:n] * weights).sum(-1)[speech] / weights.sum(-1)[speech]
                seg_scores[(condition, mode)].append((scores, seg_types[:n][speech]))
                if hp.save_audio and i < hp.n_audio_to_save:
                    _save_audio(
                        os.path.join(output_folder, "audio_results", condition, mode),
                        batch.id[0],
                        mix,
                        est,
                        hp.sample_rate,
                    )
                if i < hp.n_plots and mode in ("internal", modes[0][0]):
                    plot_utilization(
                        mix[0].cpu(),
                        used,
                        hp.sample_rate,
                        hp.kernel_stride,
                        os.path.join(plots, f"utilization_{condition}_{batch.id[0]}.png"),
                        brain.levels,
                        segment_types=frame_types,
                        title=f"{condition} / {batch.id[0]}",
                    )
        logger.info("evaluated condition %s (%d utterances)", condition, i + 1)
    return write_reports(rows, share_counts, seg_scores, brain.levels, output_folder, segment_names)


def _save_audio(folder, uid, mix, est, sample_rate):
    os.makedirs(folder, exist_ok=True)
    peak = est.abs().max().clamp_min(1e-8)
    for j in range(est.shape[-1]):
        write_audio(os.path.join(folder, f"{uid}_source{j + 1}hat.wav"), (est[0, :, j] / peak * 0.9).cpu(), sample_rate)
    write_audio(
        os.path.join(folder, f"{uid}_mix.wav"), (mix[0] / mix.abs().max().clamp_min(1e-8) * 0.9).cpu(), sample_rate
    )
