"""Whole dynamic slimmable SepFormer: encoder -> DSN masker -> decoder (Fig. 1a).

Owns the whole model, built from one architecture description
(:class:`~speechbrain_dsn.config.DSNConfig`): the recipe YAML builds
``DSNSepformer`` and hands its ``encoder``, ``masknet`` and ``decoder`` to
SpeechBrain's ``Brain``; the inference folder rebuilds it with ``from_config``.
Table I of the paper is ``DSNSepformer.paper_config()``.  :func:`separate` is
the encoder -> masker -> decoder pass shared by the model, the recipe and the
inference interface.
"""

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.dual_path import Decoder, Encoder
from torch.nn.parallel import DataParallel, DistributedDataParallel

from .config import DSNConfig, build_component, describe_component
from .layers import SlimmableTransformerBlock
from .levels import Levels
from .masker import DSNMasker

__all__ = ["DSNSepformer", "separate", "stock_sepformer", "unwrap"]


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


class DSNSepformer(torch.nn.Module):
    """SepFormer with a dynamic slimmable masker, as one module: encoder -> masker -> decoder.

    The constructor takes the fields of :class:`~speechbrain_dsn.config.DSNConfig`,
    all required, with ``gating`` the gating policy (a class or a
    ``functools.partial`` of one, as HyperPyYAML's ``!name:`` makes; None for a
    static network).  ``get_config()`` returns them as plain values and
    ``from_config()`` rebuilds the model.  A stock SepFormer state dict of the
    same configuration loads into it with only the gating module's keys missing.

    Example
    -------
    >>> config = {**DSNConfig.paper(), "N_encoder_out": 32, "chunk_size": 10, "num_dual_blocks": 1,
    ...           "num_layers": 1, "nhead": 4, "d_ffn": 64, "utilization_levels": [0.25, 1.0]}
    >>> model = DSNSepformer.from_config(config).eval()
    >>> mix = torch.randn(2, 800)
    >>> model(mix).shape
    torch.Size([2, 800, 2])
    >>> model(mix, utilization=0.25).shape
    torch.Size([2, 800, 2])
    >>> DSNSepformer.from_config(model.get_config()).get_config() == model.get_config()
    True
    """

    def __init__(
        self,
        *,
        utilization_levels: Sequence[float],
        num_spks: int,
        kernel_size: int,
        N_encoder_out: int,
        num_dual_blocks: int,
        num_layers: int,
        nhead: int,
        d_ffn: int,
        chunk_size: int,
        norm: str,
        skip_around_intra: bool,
        linear_layer_after_inter_intra: bool,
        dropout: float,
        gating: Optional[Callable[..., torch.nn.Module]],
    ):
        super().__init__()
        levels = Levels(utilization_levels)
        self.config = DSNConfig.from_dict(
            dict(
                utilization_levels=list(levels.values),
                num_spks=num_spks,
                kernel_size=kernel_size,
                N_encoder_out=N_encoder_out,
                num_dual_blocks=num_dual_blocks,
                num_layers=num_layers,
                nhead=nhead,
                d_ffn=d_ffn,
                chunk_size=chunk_size,
                norm=norm,
                skip_around_intra=skip_around_intra,
                linear_layer_after_inter_intra=linear_layer_after_inter_intra,
                dropout=dropout,
                gating=None if levels.is_static else describe_component(gating),
            )
        )
        self.encoder = Encoder(kernel_size=kernel_size, out_channels=N_encoder_out)
        block = SlimmableTransformerBlock(
            num_layers=num_layers,
            d_model=N_encoder_out,
            nhead=nhead,
            d_ffn=d_ffn,
            dropout=dropout,
            use_positional_encoding=True,
            norm_before=True,
            utilization_levels=levels.values,
        )
        # the masker deep-copies a block passed as both intra and inter model
        self.masknet = DSNMasker(
            in_channels=N_encoder_out,
            out_channels=N_encoder_out,
            intra_model=block,
            inter_model=block,
            num_layers=num_dual_blocks,
            norm=norm,
            K=chunk_size,
            num_spks=num_spks,
            skip_around_intra=skip_around_intra,
            linear_layer_after_inter_intra=linear_layer_after_inter_intra,
            gating=gating,
        )
        self.decoder = Decoder(
            in_channels=N_encoder_out, out_channels=1, kernel_size=kernel_size, stride=kernel_size // 2, bias=False
        )

    def get_config(self) -> dict:
        """The architecture as plain values (see :class:`~speechbrain_dsn.config.DSNConfig`)."""
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict) -> "DSNSepformer":
        """Builds the model that ``config`` (a dict from :meth:`get_config`) describes."""
        config = DSNConfig.from_dict(dict(config))
        return cls(**{**config.to_dict(), "gating": build_component(config.gating)})

    @classmethod
    def paper_config(cls, utilization_levels: Sequence[float] = (0.125, 0.5, 1.0), **overrides) -> "DSNSepformer":
        """Builds the configuration of Section IV-B / Table I.

        Example
        -------
        >>> model = DSNSepformer.paper_config(utilization_levels=[1.0])
        >>> round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        13.04
        """
        return cls.from_config({**DSNConfig.paper(), "utilization_levels": list(utilization_levels), **overrides})

    @property
    def last_utilization(self) -> Optional[torch.Tensor]:
        """Per-frame utilization [B, T] used by the last forward pass."""
        return self.masknet.last_utilization

    def forward(self, mix: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None) -> torch.Tensor:
        """Separates mixtures [B, L] into sources [B, L, num_spks].

        ``utilization``: external gating, one level or [B, T] levels per encoder frame.
        """
        return separate(self.encoder, self.masknet, self.decoder, mix, utilization)


def stock_sepformer(config: dict) -> torch.nn.Module:
    """SpeechBrain's ``SepformerWrapper`` with the architecture of a DSN ``config`` at full width.

    Its state dict loads into ``DSNSepformer.from_config(config)`` with only the
    gating keys missing (when the highest level is 1.0); the oracle of the
    full-width tests and the stock baseline of ``benchmarks/speed.py``.

    Example
    -------
    >>> config = {**DSNConfig.paper(), "num_dual_blocks": 1, "num_layers": 1}
    >>> stock, dsn = stock_sepformer(config), DSNSepformer.from_config(config)
    >>> sorted(set(dsn.state_dict()) - set(stock.state_dict()))[0]
    'masknet.gating.bottleneck.weight'
    """
    from speechbrain.lobes.models.dual_path import SepformerWrapper

    c = DSNConfig.from_dict(dict(config))
    return SepformerWrapper(
        encoder_kernel_size=c.kernel_size,
        encoder_out_nchannels=c.N_encoder_out,
        masknet_chunksize=c.chunk_size,
        masknet_numlayers=c.num_dual_blocks,
        masknet_norm=c.norm,
        masknet_useextralinearlayer=c.linear_layer_after_inter_intra,
        masknet_extraskipconnection=c.skip_around_intra,
        masknet_numspks=c.num_spks,
        intra_numlayers=c.num_layers,
        inter_numlayers=c.num_layers,
        intra_nhead=c.nhead,
        inter_nhead=c.nhead,
        intra_dffn=c.d_ffn,
        inter_dffn=c.d_ffn,
    )
