"""Inference folders for trained DSNs, loadable by SpeechBrain's separation interface.

:func:`export_inference_folder` writes ``hyperparams.yaml``, ``encoder.ckpt``,
``masknet.ckpt`` and ``decoder.ckpt``; the stock
``speechbrain.inference.separation.SepformerSeparation.from_hparams`` loads
that folder and separates with internal gating, because the DSN masker
computes its gates inside ``masknet(mix_w)``.  :class:`DSNSeparation` adds
external gating (``utilization=``) and exposes the utilization it used.
"""

import os
from typing import Optional, Union

import torch
from speechbrain.inference.separation import SepformerSeparation

from .model import separate, unwrap

__all__ = ["DSNSeparation", "export_inference_folder", "MODEL_KEYS"]

#: Recipe keys that define the architecture (copied into hyperparams.yaml).
MODEL_KEYS = (
    "sample_rate", "num_spks", "utilization_levels", "kernel_size", "kernel_stride", "N_encoder_out",
    "num_dual_blocks", "num_layers", "nhead", "d_ffn", "chunk_size", "gating_channels", "gating_nhead",
    "gating_d_ffn", "gating_context", "gumbel_tau",
)

_TEMPLATE = """\
# Dynamic slimmable SepFormer (speechbrain-dsn) for inference.
# Load with speechbrain.inference.separation.SepformerSeparation.from_hparams
# or speechbrain_dsn.inference.DSNSeparation.from_hparams (external gating).

{values}

encoder: !new:speechbrain.lobes.models.dual_path.Encoder
    kernel_size: !ref <kernel_size>
    out_channels: !ref <N_encoder_out>

# DSNMasker deep-copies a block passed as both intra and inter model.
transformer_block: !new:speechbrain_dsn.slimmable.SlimmableTransformerBlock
    num_layers: !ref <num_layers>
    d_model: !ref <N_encoder_out>
    nhead: !ref <nhead>
    d_ffn: !ref <d_ffn>
    dropout: 0.0
    use_positional_encoding: True
    norm_before: True
    utilization_levels: !ref <utilization_levels>

masknet: !new:speechbrain_dsn.masker.DSNMasker
    in_channels: !ref <N_encoder_out>
    out_channels: !ref <N_encoder_out>
    intra_model: !ref <transformer_block>
    inter_model: !ref <transformer_block>
    num_layers: !ref <num_dual_blocks>
    norm: ln
    K: !ref <chunk_size>
    num_spks: !ref <num_spks>
    skip_around_intra: True
    linear_layer_after_inter_intra: False
    gating_channels: !ref <gating_channels>
    gating_nhead: !ref <gating_nhead>
    gating_d_ffn: !ref <gating_d_ffn>
    gating_context: !ref <gating_context>
    gumbel_tau: !ref <gumbel_tau>

decoder: !new:speechbrain.lobes.models.dual_path.Decoder
    in_channels: !ref <N_encoder_out>
    out_channels: 1
    kernel_size: !ref <kernel_size>
    stride: !ref <kernel_stride>
    bias: False

modules:
    encoder: !ref <encoder>
    masknet: !ref <masknet>
    decoder: !ref <decoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
        masknet: !ref <masknet>
        decoder: !ref <decoder>
"""


def export_inference_folder(hparams: dict, modules, folder: str) -> str:
    """Writes an inference-ready folder for a trained model.

    Files are written under temporary names and renamed at the end, so an
    interrupted export leaves no half-written folder content behind.

    Arguments
    ---------
    hparams : dict
        Recipe hyperparameters holding every key of :data:`MODEL_KEYS`.
    modules : dict
        ``encoder``, ``masknet`` and ``decoder`` with trained weights (plain
        or DDP-wrapped, as in ``Brain.modules`` under torchrun).
    folder : str
        Output folder (created).

    Returns
    -------
    str
        The folder.
    """
    missing = [k for k in MODEL_KEYS if k not in hparams]
    if missing:
        raise KeyError(f"hparams lack the model keys {missing}")
    values = "\n".join(f"{k}: {_yaml_value(hparams[k])}" for k in MODEL_KEYS)
    os.makedirs(folder, exist_ok=True)
    files = {"hyperparams.yaml": None, "encoder.ckpt": "encoder", "masknet.ckpt": "masknet", "decoder.ckpt": "decoder"}
    written = []
    try:
        for name, module in files.items():
            tmp = os.path.join(folder, f".{name}.tmp")
            if module is None:
                with open(tmp, "w") as fout:
                    fout.write(_TEMPLATE.format(values=values))
            else:
                torch.save(unwrap(modules[module]).state_dict(), tmp)
            written.append((tmp, os.path.join(folder, name)))
    except BaseException:
        for tmp, _ in written:
            os.remove(tmp)
        raise
    for tmp, final in written:
        os.replace(tmp, final)
    return folder


def _yaml_value(value):
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(float(v)) for v in value) + "]"
    return str(value)


class DSNSeparation(SepformerSeparation):
    """SpeechBrain separation interface with external gating.

    ``separate_batch(mix)`` uses the gating module; ``separate_batch(mix,
    utilization=0.5)`` runs every frame at one level (e.g. chosen from a
    battery level), and a tensor [B, frames] sets levels per frame.
    ``last_utilization`` holds the per-frame utilization of the last call.
    """

    def separate_batch(self, mix: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None):
        """Separates a batch [B, T]; returns [B, T, num_spks]."""
        mods = self.mods
        return separate(mods.encoder, mods.masknet, mods.decoder, mix.to(self.device), utilization)

    @property
    def last_utilization(self) -> Optional[torch.Tensor]:
        """Per-frame utilization [B, frames] of the last separation."""
        return unwrap(self.mods.masknet).last_utilization
