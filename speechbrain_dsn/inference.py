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
import yaml
from speechbrain.inference.separation import SepformerSeparation
from speechbrain.utils.data_utils import split_path
from speechbrain.utils.fetching import LocalStrategy, fetch

from .config import DSNConfig
from .data.audio import load_audio
from .model import separate, unwrap

__all__ = ["DSNSeparation", "FORMAT", "export_inference_folder", "inference_hparams"]

#: Version of the inference-folder layout: 2 stores the model config (``model_config``);
#: folders of version 1 (a template with ``speechbrain_dsn.slimmable``) are converted by
#: ``python -m speechbrain_dsn.convert DIR``.
FORMAT = 2

_HEADER = """\
# Dynamic slimmable SepFormer (speechbrain-dsn) for inference, folder format {format}.
# Load with speechbrain.inference.separation.SepformerSeparation.from_hparams
# or speechbrain_dsn.inference.DSNSeparation.from_hparams (external gating).
# The architecture is `model_config` (speechbrain_dsn.config.DSNConfig).

"""

_WIRING = """
model: !apply:speechbrain_dsn.model.DSNSepformer.from_config [!ref <model_config>]
num_spks: !ref <model_config[num_spks]>
utilization_levels: !ref <model_config[utilization_levels]>
kernel_size: !ref <model_config[kernel_size]>
kernel_stride: !ref <model_config[kernel_size]> // 2

modules:
    encoder: !ref <model.encoder>
    masknet: !ref <model.masknet>
    decoder: !ref <model.decoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <model.encoder>
        masknet: !ref <model.masknet>
        decoder: !ref <model.decoder>
"""


def inference_hparams(model_config: dict, sample_rate: int) -> str:
    """The ``hyperparams.yaml`` text of an inference folder for a model config.

    Example
    -------
    >>> from speechbrain_dsn.config import DSNConfig
    >>> text = inference_hparams(DSNConfig.paper(), 8000)
    >>> "model_config:" in text and "DSNSepformer.from_config" in text
    True
    """
    config = DSNConfig.from_dict(dict(model_config)).to_dict()
    values = yaml.safe_dump({"sample_rate": int(sample_rate), "model_config": config}, sort_keys=False,
                            default_flow_style=None)
    return _HEADER.format(format=FORMAT) + values + _WIRING


def export_inference_folder(model_config: dict, modules, folder: str, sample_rate: int) -> str:
    """Writes an inference-ready folder for a trained model.

    The files are written into a hidden folder beside ``folder``, which then
    replaces ``folder`` (renames only): an export that fails or is killed
    leaves the previous folder whole, never a mix of old and new files.
    Other files in a previous ``folder`` are kept.

    Arguments
    ---------
    model_config : dict
        The architecture, ``DSNSepformer.get_config()`` (the recipe's ``model``).
    modules : dict
        ``encoder``, ``masknet`` and ``decoder`` with trained weights (plain
        or DDP-wrapped, as in ``Brain.modules`` under torchrun).
    folder : str
        Output folder (created).
    sample_rate : int
        Sampling rate of the model's audio.

    Returns
    -------
    str
        The folder.
    """
    text = inference_hparams(model_config, sample_rate)
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
                    fout.write(text)
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

    @classmethod
    def from_hparams(cls, source, *args, **kwargs):
        """SpeechBrain's ``from_hparams``; a format-1 folder is an error that says how to convert it."""
        from .convert import is_legacy_folder

        if os.path.isdir(str(source)) and is_legacy_folder(str(source)):
            raise ValueError(f"{source}: an inference folder of format 1 (speechbrain-dsn before 0.2); convert it "
                             f"once with `python -m speechbrain_dsn.convert {source}`")
        return super().from_hparams(source, *args, **kwargs)

    def separate_batch(self, mix: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None):
        """Separates a batch [B, T]; returns [B, T, num_spks].

        A mixture with NaN or infinite samples, or shorter than the
        encoder's kernel, is a ``ValueError``.
        """
        if mix.dim() != 2:
            raise ValueError(f"expected mixtures [batch, time], got shape {tuple(mix.shape)}")
        kernel = int(self.hparams.kernel_size)
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
