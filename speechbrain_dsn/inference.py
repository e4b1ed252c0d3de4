"""Inference folders for trained DSNs, loadable by SpeechBrain's separation interface.

:func:`export_inference_folder` writes ``hyperparams.yaml``, ``encoder.ckpt``,
``masknet.ckpt`` and ``decoder.ckpt``; the stock
``speechbrain.inference.separation.SepformerSeparation.from_hparams`` loads
that folder and separates with internal gating, because the DSN masker
computes its gates inside ``masknet(mix_w)``.  :class:`DSNSeparation` adds
external gating (``utilization=``) and exposes the utilization it used.
"""

import os
import shutil
import uuid
from typing import Optional, Union

import torch
from speechbrain.inference.separation import SepformerSeparation
from speechbrain.utils.data_utils import split_path
from speechbrain.utils.fetching import LocalStrategy, fetch

from .data.audio import load_audio
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

    The files are written into a hidden folder beside ``folder``, which then
    replaces ``folder`` (renames only): an export that fails or is killed
    leaves the previous folder whole, never a mix of old and new files.
    Other files in a previous ``folder`` are kept.

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
    target = os.path.abspath(folder)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging, old = os.path.join(parent, f".{name}.tmp-{tag}"), os.path.join(parent, f".{name}.old-{tag}")
    files = {"hyperparams.yaml": None, "encoder.ckpt": "encoder", "masknet.ckpt": "masknet", "decoder.ckpt": "decoder"}
    try:
        os.makedirs(staging)
        for file, module in files.items():
            path = os.path.join(staging, file)
            if module is None:
                with open(path, "w") as fout:
                    fout.write(_TEMPLATE.format(values=values))
            else:
                torch.save(unwrap(modules[module]).state_dict(), path)
            _fsync(path)
        if not os.path.isdir(target):
            os.rename(staging, target)
            return folder
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(old, target)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for entry in os.listdir(old):  # the user's own files
        if entry not in files:
            os.rename(os.path.join(old, entry), os.path.join(target, entry))
    shutil.rmtree(old)
    return folder


def _fsync(path: str):
    with open(path, "rb") as fin:
        os.fsync(fin.fileno())


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

    ``separate_file`` checks its input (see there): broken files are errors
    naming the file, multi-channel files are downmixed and other sample
    rates resampled.
    """

    def separate_batch(self, mix: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None):
        """Separates a batch [B, T]; returns [B, T, num_spks].

        A mixture with NaN or infinite samples, or shorter than the
        encoder's kernel, is a ``ValueError``.
        """
        if mix.dim() != 2:
            raise ValueError(f"expected mixtures [batch, time], got shape {tuple(mix.shape)}")
        kernel = int(getattr(self.hparams, "kernel_size", 1))
        if mix.shape[-1] < kernel:
            raise ValueError(f"the mixture is too short: {mix.shape[-1]} samples, the model needs at least {kernel}")
        if not torch.isfinite(mix).all():
            raise ValueError("the mixture has NaN or infinite samples")
        mods = self.mods
        return separate(mods.encoder, mods.masknet, mods.decoder, mix.to(self.device), utilization)

    def separate_file(self, path, savedir=None, utilization: Optional[Union[float, torch.Tensor]] = None):
        """Separates a mixture file; returns [1, T, num_spks], each estimate scaled to a peak of 1.

        Like SpeechBrain's ``SepformerSeparation.separate_file`` (a local
        path, a URL or a Hugging Face ``repo/file`` path), with the input
        checked:

        * a missing file is a ``FileNotFoundError``; a file that is not
          audio, an empty one or one with NaN or infinite samples a
          ``BadAudioError`` (a ``ValueError``); one shorter than the
          encoder's kernel a ``ValueError``: each message names the file;
        * a multi-channel file is averaged to mono (SpeechBrain's would
          separate each channel as a mixture of its own when the sample
          rate matches), another sample rate is resampled to the model's;
        * a silent file gives silent estimates (SpeechBrain's peak scaling
          would divide 0 by 0).

        ``utilization`` is passed to :meth:`separate_batch`.
        """
        path = self._local_file(str(path), savedir)
        sample_rate = int(self.hparams.sample_rate)
        mix = torch.from_numpy(load_audio(path, sample_rate, downmix=True))[None]
        try:
            est = self.separate_batch(mix, utilization)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        return est / est.abs().max(dim=1, keepdim=True)[0].clamp_min(1e-12)

    @staticmethod
    def _local_file(path: str, savedir=None) -> str:
        """The local path of a file, fetching URLs and Hugging Face paths as SpeechBrain does."""
        if os.path.exists(path):
            return path
        first = path.split("/")[0]
        if "://" not in path and (os.path.isabs(path) or "/" not in path or os.path.isdir(first)):
            raise FileNotFoundError(f"{path}: no such file")
        source, name = split_path(path)
        try:
            return str(fetch(name, source=source, savedir=savedir, local_strategy=LocalStrategy.SYMLINK))
        except Exception as err:  # network, hub or local errors: all mean "no such file" here
            raise FileNotFoundError(f"{path}: no such file, and fetching it as a URL or Hugging Face path "
                                    f"failed ({type(err).__name__}: {err})") from err

    @property
    def last_utilization(self) -> Optional[torch.Tensor]:
        """Per-frame utilization [B, frames] of the last separation."""
        return unwrap(self.mods.masknet).last_utilization
