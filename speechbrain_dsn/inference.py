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
from typing import Callable, Optional, Union

import torch
import yaml
from speechbrain.inference.separation import SepformerSeparation
from speechbrain.utils.data_utils import split_path
from speechbrain.utils.fetching import LocalStrategy, fetch

from .budget import SeparationReport, budget_levels
from .complexity import gating_gmacs, level_gmacs, track_gmacs
from .config import DSNConfig
from .data.audio import load_audio
from .levels import Levels
from .long_audio import separate_in_windows, window_starts
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
    values = yaml.safe_dump(
        {"sample_rate": int(sample_rate), "model_config": config}, sort_keys=False, default_flow_style=None
    )
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
    """SpeechBrain separation interface with compute control and long-audio support.

    * ``separate_batch(mix)`` uses the gating module (internal gating);
      ``utilization=0.5`` runs every frame at one level (external gating),
      a tensor [B, frames] of levels sets them per frame; ``budget=0.4``
      keeps the gate deciding where to spend and meets an average utilization
      of 0.4 per input (:mod:`speechbrain_dsn.budget`).
    * Every call leaves a :class:`~speechbrain_dsn.budget.SeparationReport` in
      ``last_report``: per-frame utilization, its average and the effective
      GMAC/s; ``last_utilization`` is its per-frame track.
    * ``separate_file`` checks its input (broken files are errors naming the
      file; multi-channel files are downmixed, other rates resampled) and
      separates recordings longer than :attr:`window_seconds` in overlapping
      windows (:mod:`speechbrain_dsn.long_audio`); :meth:`separate_long` yields
      the pieces one window at a time.
    """

    #: Inputs longer than this are separated in windows of this length (seconds) ...
    window_seconds = 16.0
    #: ... that overlap by this much (seconds).
    overlap_seconds = 2.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_report: Optional[SeparationReport] = None
        self._level_gmacs, self._gating_gmacs = None, 0.0

    @classmethod
    def from_hparams(cls, source, *args, **kwargs):
        """SpeechBrain's ``from_hparams``; a format-1 folder is an error that says how to convert it."""
        from .convert import is_legacy_folder

        if os.path.isdir(str(source)) and is_legacy_folder(str(source)):
            raise ValueError(
                f"{source}: an inference folder of format 1 (speechbrain-dsn before 0.2); convert it "
                f"once with `python -m speechbrain_dsn.convert {source}`"
            )
        return super().from_hparams(source, *args, **kwargs)

    @property
    def levels(self) -> Levels:
        return unwrap(self.mods.masknet).levels

    def separate_batch(
        self,
        mix: torch.Tensor,
        utilization: Optional[Union[float, torch.Tensor]] = None,
        budget: Optional[float] = None,
    ):
        """Separates a batch [B, T]; returns [B, T, num_spks].

        A mixture with NaN or infinite samples, or shorter than the encoder's
        kernel, is a ``ValueError``, and so is a ``budget`` outside (0, 1] or
        given together with ``utilization``.  Runs without autograd (the
        engine's in-place inference path).
        """
        if mix.dim() != 2:
            raise ValueError(f"expected mixtures [batch, time], got shape {tuple(mix.shape)}")
        kernel = int(self.hparams.kernel_size)
        if mix.shape[-1] < kernel:
            raise ValueError(f"the mixture is too short: {mix.shape[-1]} samples, the model needs at least {kernel}")
        if not torch.isfinite(mix).all():
            raise ValueError("the mixture has NaN or infinite samples")
        if utilization is not None and budget is not None:
            raise ValueError("give a utilization or a budget, not both")
        encoder, masknet, decoder = (unwrap(self.mods[k]) for k in ("encoder", "masknet", "decoder"))
        mix = mix.to(self.device)
        mode = "internal" if masknet.gating is not None else "static"
        with torch.no_grad():
            if budget is not None:
                utilization, mode = self._budget_track(encoder, masknet, mix, budget), "budget"
            elif utilization is not None:
                mode = "external"
            est = separate(encoder, masknet, decoder, mix, utilization)
        self.last_report = self.report_for(masknet.last_utilization, mode, budget)
        return est

    def _budget_track(self, encoder, masknet, mix, budget):
        """Per-frame levels [B, T] that meet ``budget`` on average, chosen from the gate's logits."""
        if masknet.gating is None:
            raise ValueError("a static network has a single level; a budget needs a DSN")
        if not hasattr(masknet.gating, "logits"):
            raise ValueError(f"the gating policy {type(masknet.gating).__name__} has no logits(); a budget needs them")
        logits = masknet.gating.logits(encoder(mix))
        return masknet.levels.tensor(mix.device)[budget_levels(logits, masknet.levels, budget)]

    def level_costs(self) -> dict:
        """GMAC/s of the separator at each level (one trace on 4 s, then cached)."""
        if self._level_gmacs is None:
            masknet, rate = unwrap(self.mods.masknet), int(self.hparams.sample_rate)
            # tracing runs forward passes: keep what the last separation recorded
            last = masknet.last_utilization, masknet.last_gates
            self._level_gmacs = level_gmacs(self.mods, 4.0, rate)
            self._gating_gmacs = gating_gmacs(self.mods, 4.0, rate)
            masknet.last_utilization, masknet.last_gates = last
        return self._level_gmacs

    def report_for(self, track, mode, budget=None) -> SeparationReport:
        """The report of a per-frame utilization track [B, T]."""
        self.level_costs()
        track = track.detach().float().cpu()
        gate = self._gating_gmacs if mode in ("internal", "budget") else 0.0
        gmacs = torch.tensor([track_gmacs(self._level_gmacs, t) + gate for t in track])
        return SeparationReport(utilization=track, average=track.mean(-1), gmacs=gmacs, budget=budget, mode=mode)

    def separate_long(
        self,
        mix: torch.Tensor,
        utilization: Optional[float] = None,
        budget: Optional[float] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ):
        """Yields (estimates [n, num_spks], utilization [frames]) pieces of a mixture [L] of any length.

        The pieces concatenate to the separation of the whole mixture; each
        window is separated with :meth:`separate_batch` (a level, a budget per
        window, or internal gating).  ``progress(done, total)`` is called after
        each window.  A per-frame track is not accepted here.
        """
        if torch.is_tensor(utilization) and utilization.dim() > 0:
            raise ValueError("a per-frame utilization track needs a single pass; give a level or a budget")
        if mix.dim() > 2 or (mix.dim() == 2 and mix.shape[0] != 1):
            raise ValueError(f"expected one mixture [samples] or [1, samples], got shape {tuple(mix.shape)}")
        rate = int(self.hparams.sample_rate)
        window, overlap = int(self.window_seconds * rate), int(self.overlap_seconds * rate)
        total, done = len(window_starts(mix.shape[-1], window, overlap)), 0

        def one_window(piece):
            nonlocal done
            with torch.no_grad():
                est = self.separate_batch(piece, utilization, budget)[0].cpu()
            done += 1
            if progress is not None:
                progress(done, total)
            return est, self.last_report.utilization[0]

        yield from separate_in_windows(one_window, mix.reshape(-1), window, overlap, int(self.hparams.kernel_stride))

    def separate_file(
        self,
        path,
        savedir=None,
        utilization: Optional[Union[float, torch.Tensor]] = None,
        budget: Optional[float] = None,
    ):
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

        ``utilization`` and ``budget`` are as in :meth:`separate_batch`; a
        recording longer than :attr:`window_seconds` is separated in windows,
        and ``last_report`` then covers all of them.
        """
        path = self._local_file(str(path), savedir)
        mix = torch.from_numpy(load_audio(path, int(self.hparams.sample_rate), downmix=True))[None]
        try:
            if mix.shape[-1] <= self.window_seconds * int(self.hparams.sample_rate):
                est = self.separate_batch(mix, utilization, budget)
            else:
                pieces = list(self.separate_long(mix[0], utilization, budget))
                est = torch.cat([p for p, _ in pieces])[None]
                track = torch.cat([u for _, u in pieces])[None]
                mode = self.last_report.mode
                self.last_report = self.report_for(track, mode, budget)
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
            raise FileNotFoundError(
                f"{path}: no such file, and fetching it as a URL or Hugging Face path "
                f"failed ({type(err).__name__}: {err})"
            ) from err

    @property
    def last_utilization(self) -> Optional[torch.Tensor]:
        """Per-frame utilization [B, frames] of the last separation."""
        return None if self.last_report is None else self.last_report.utilization
