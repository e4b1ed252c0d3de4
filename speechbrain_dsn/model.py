"""Whole dynamic slimmable SepFormer: encoder -> DSN masker -> decoder (Fig. 1a).

``DSNSepformer`` is for users who build SepFormer in code, as with
SpeechBrain's ``SepformerWrapper``; recipe users wire the same parts in
HyperPyYAML (see ``hparams/``).  Table I of the paper is the configuration
``DSNSepformer.paper_config()``.
"""

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.dual_path import Decoder, Encoder, SepformerWrapper
from torch.nn.parallel import DataParallel, DistributedDataParallel

from .masker import DSNMasker
from .slimmable import SlimmableTransformerBlock

__all__ = ["DSNSepformer", "PAPER_CONFIG", "separate", "unwrap"]

#: Section IV-B / Table I: N=2 blocks, 4+4 layers, 8 heads, d_ffn 1024,
#: chunk 50, encoder kernel 16 (stride 8) with 256 channels.
PAPER_CONFIG = dict(
    encoder_kernel_size=16,
    encoder_out_nchannels=256,
    masknet_chunksize=50,
    masknet_numlayers=2,
    intra_numlayers=4,
    inter_numlayers=4,
    intra_nhead=8,
    inter_nhead=8,
    intra_dffn=1024,
    inter_dffn=1024,
)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper, else ``module``.

    Under torchrun SpeechBrain wraps each trainable module of ``Brain.modules``
    (and of a distributed inference interface's ``mods``) in DDP; attributes
    such as ``utilization_levels``, ``last_utilization`` or ``gating`` live on
    the wrapped module.

    Example
    -------
    >>> linear = torch.nn.Linear(2, 2)
    >>> unwrap(linear) is linear, unwrap(torch.nn.DataParallel(linear)) is linear
    (True, True)
    """
    return module.module if isinstance(module, (DistributedDataParallel, DataParallel)) else module


def separate(
    encoder, masknet, decoder, mix: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None
) -> torch.Tensor:
    """Encoder -> masker -> decoder, as SpeechBrain's SepFormer separates.

    Shared by :class:`DSNSepformer`, the recipe's ``DSNBrain`` and the
    inference interface.

    Arguments
    ---------
    encoder, masknet, decoder : torch.nn.Module
        The three parts of the separator.
    mix : torch.Tensor
        Mixtures of shape [B, L] (samples).
    utilization : float or torch.Tensor, optional
        External gating: one level, or [B, T] levels per encoder frame.

    Returns
    -------
    torch.Tensor
        Estimated sources of shape [B, L, num_spks].
    """
    if mix.dim() != 2:
        raise ValueError(f"expected mixture of shape [batch, time], got {tuple(mix.shape)}")
    # [B, F, T]
    mix_w = encoder(mix)
    # [spks, B, F, T]
    est_mask = masknet(mix_w, utilization=utilization)
    sep_h = mix_w.unsqueeze(0) * est_mask
    # [B, L', spks]
    est_source = torch.stack([decoder(sep_h[i]) for i in range(est_mask.shape[0])], dim=-1)
    # The transposed convolution can end a few samples short of the input.
    T_origin, T_est = mix.size(1), est_source.size(1)
    if T_origin > T_est:
        return F.pad(est_source, (0, 0, 0, T_origin - T_est))
    return est_source[:, :T_origin, :]


class DSNSepformer(SepformerWrapper):
    """SepFormer with a dynamic slimmable masker, as one module.

    Takes the constructor arguments of SpeechBrain's ``SepformerWrapper``
    plus the utilization levels and gating options.  A ``SepformerWrapper``
    state dict loads into it with only the gating module's keys missing.

    Arguments
    ---------
    encoder_kernel_size : int
        Encoder kernel (stride is half of it).
    encoder_in_nchannels : int
        Input audio channels.
    encoder_out_nchannels : int
        Encoder filters F.
    masknet_chunksize : int
        Chunk size C.
    masknet_numlayers : int
        Dual-path blocks N.
    masknet_norm : str
        Masker normalisation.
    masknet_useextralinearlayer : bool
        Linear layer after intra and inter blocks.
    masknet_extraskipconnection : bool
        Skip connection around the intra block.
    masknet_numspks : int
        Number of sources.
    intra_numlayers, inter_numlayers : int
        Transformer layers per intra / inter block.
    intra_nhead, inter_nhead : int
        Attention heads at full width.
    intra_dffn, inter_dffn : int
        FFN neurons at full width.
    intra_use_positional, inter_use_positional : bool
        Positional encodings.
    intra_norm_before, inter_norm_before : bool
        Pre-norm layers.
    utilization_levels : sequence of float
        Levels of the network; one level gives a static network of that width.
    dropout : float
        Transformer dropout (``SepformerWrapper`` uses SpeechBrain's default 0.1).
    gating_channels, gating_nhead, gating_d_ffn, gating_context : int
        Gating-module configuration (Section IV-B).
    gumbel_tau : float
        Gumbel-softmax temperature.

    Example
    -------
    >>> model = DSNSepformer(
    ...     encoder_out_nchannels=32, masknet_chunksize=10, intra_numlayers=1,
    ...     inter_numlayers=1, intra_nhead=4, inter_nhead=4, intra_dffn=64,
    ...     inter_dffn=64, utilization_levels=[0.25, 1.0]).eval()
    >>> mix = torch.randn(2, 800)
    >>> model(mix).shape
    torch.Size([2, 800, 2])
    >>> model(mix, utilization=0.25).shape
    torch.Size([2, 800, 2])
    """

    def __init__(
        self,
        encoder_kernel_size: int = 16,
        encoder_in_nchannels: int = 1,
        encoder_out_nchannels: int = 256,
        masknet_chunksize: int = 250,
        masknet_numlayers: int = 2,
        masknet_norm: str = "ln",
        masknet_useextralinearlayer: bool = False,
        masknet_extraskipconnection: bool = True,
        masknet_numspks: int = 2,
        intra_numlayers: int = 8,
        inter_numlayers: int = 8,
        intra_nhead: int = 8,
        inter_nhead: int = 8,
        intra_dffn: int = 1024,
        inter_dffn: int = 1024,
        intra_use_positional: bool = True,
        inter_use_positional: bool = True,
        intra_norm_before: bool = True,
        inter_norm_before: bool = True,
        utilization_levels: Sequence[float] = (0.125, 0.5, 1.0),
        dropout: float = 0.1,
        gating_channels: int = 32,
        gating_nhead: int = 1,
        gating_d_ffn: int = 128,
        gating_context: int = 64,
        gumbel_tau: float = 1.0,
    ):
        # SepformerWrapper.__init__ would build and initialise a stock masker
        # only to throw it away, so the parts are built here directly.
        torch.nn.Module.__init__(self)
        self.encoder = Encoder(
            kernel_size=encoder_kernel_size,
            out_channels=encoder_out_nchannels,
            in_channels=encoder_in_nchannels,
        )
        blocks = {}
        for name, layers, nhead, dffn, positional, norm_before in (
            ("intra", intra_numlayers, intra_nhead, intra_dffn, intra_use_positional, intra_norm_before),
            ("inter", inter_numlayers, inter_nhead, inter_dffn, inter_use_positional, inter_norm_before),
        ):
            blocks[name] = SlimmableTransformerBlock(
                num_layers=layers,
                d_model=encoder_out_nchannels,
                nhead=nhead,
                d_ffn=dffn,
                dropout=dropout,
                use_positional_encoding=positional,
                norm_before=norm_before,
                utilization_levels=utilization_levels,
            )
        self.masknet = DSNMasker(
            in_channels=encoder_out_nchannels,
            out_channels=encoder_out_nchannels,
            intra_model=blocks["intra"],
            inter_model=blocks["inter"],
            num_layers=masknet_numlayers,
            norm=masknet_norm,
            K=masknet_chunksize,
            num_spks=masknet_numspks,
            skip_around_intra=masknet_extraskipconnection,
            linear_layer_after_inter_intra=masknet_useextralinearlayer,
            gating_channels=gating_channels,
            gating_nhead=gating_nhead,
            gating_d_ffn=gating_d_ffn,
            gating_context=gating_context,
            gumbel_tau=gumbel_tau,
        )
        self.decoder = Decoder(
            in_channels=encoder_out_nchannels,
            out_channels=encoder_in_nchannels,
            kernel_size=encoder_kernel_size,
            stride=encoder_kernel_size // 2,
            bias=False,
        )
        self.num_spks = masknet_numspks
        for module in [self.encoder, self.masknet, self.decoder]:
            self.reset_layer_recursively(module)

    @classmethod
    def paper_config(cls, utilization_levels: Sequence[float] = (0.125, 0.5, 1.0), **kwargs) -> "DSNSepformer":
        """Builds the configuration of Section IV-B / Table I.

        Example
        -------
        >>> model = DSNSepformer.paper_config(utilization_levels=[1.0])
        >>> round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        13.04
        """
        return cls(utilization_levels=utilization_levels, **{**PAPER_CONFIG, **kwargs})

    @property
    def last_utilization(self) -> Optional[torch.Tensor]:
        """Per-frame utilization [B, T] used by the last forward pass."""
        return self.masknet.last_utilization

    def forward(
        self, mix: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None
    ) -> torch.Tensor:
        """Separates a batch of mixtures.

        Arguments
        ---------
        mix : torch.Tensor
            Mixtures of shape [B, L] (samples).
        utilization : float or torch.Tensor, optional
            External gating: one level, or [B, T] levels per encoder frame.

        Returns
        -------
        torch.Tensor
            Estimated sources of shape [B, L, num_spks].
        """
        return separate(self.encoder, self.masknet, self.decoder, mix, utilization)
