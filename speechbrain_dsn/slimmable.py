"""Slimmable transformer layers whose width follows a per-frame utilization.

This module implements Section III-E of Elminshawi et al., *Dynamic Slimmable
Networks for Efficient Speech Separation* (TASLP 2025):

* slimmable multi-head attention, eqs. (13)-(15): frame ``m`` uses only the
  first ``ceil(U_m H)`` heads; for head ``h`` the projections, the softmax
  normalisation and the value aggregation are restricted to the frames where
  ``h`` is active;
* slimmable position-wise feed-forward network, eq. (16): frame ``m`` uses
  only the first ``ceil(U_m D)`` intermediate neurons.

The attention and FFN live in :mod:`speechbrain_dsn.attention` and
:mod:`speechbrain_dsn.feedforward`; this module assembles them into layers and
the drop-in block.  Every layer has two execution paths that give the same numbers:

* the **masked path** (training with the gating module): all heads and neurons
  are computed and multiplied by masks that are linear in the one-hot gates,
  so the straight-through gradients reach the gating module;
* the **sliced path** (inference, external gating, static networks): tokens
  are grouped by level and each group runs through weights sliced to its
  width, so the work of inactive heads and neurons is never done.  This is the
  mixture-of-experts token-routing pattern applied to nested widths.

Parameter names follow SpeechBrain's ``SBTransformerBlock`` exactly, so a
stock SepFormer checkpoint loads into a full-width slimmable block.

Shapes used in the comments:
    N: number of sequences (batch x chunks), M: sequence length,
    F: model dimension, H: heads, d: head dimension, D: FFN neurons,
    K: number of utilization levels, P: number of routed tokens,
    L: length of a packed sequence (see routing.py).
"""

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding
from speechbrain.nnet.normalization import LayerNorm

from .attention import SlimmableMultiheadAttention
from .feedforward import SlimmableFeedForward
from .routing import Route, check_levels, level_index

__all__ = [
    "Route",
    "SlimmableFeedForward",
    "SlimmableMultiheadAttention",
    "SlimmableTransformerBlock",
    "SlimmableTransformerLayer",
]


class SlimmableTransformerLayer(nn.Module):
    """One transformer encoder layer with slimmable attention and FFN.

    Mirrors ``speechbrain.lobes.models.transformer.Transformer.TransformerEncoderLayer``
    (regular MHA, regular FFN), including its parameter names.

    Arguments
    ---------
    d_ffn : int
        FFN neurons at full width.
    nhead : int
        Attention heads at full width.
    d_model : int
        Model dimension.
    utilization_levels : sequence of float
        Levels the layer can run at.
    dropout : float
        Dropout rate.
    activation : type
        Activation class of the FFN.
    normalize_before : bool
        Pre-norm (True, as in SepFormer) or post-norm.

    Example
    -------
    >>> layer = SlimmableTransformerLayer(64, 4, 32, [0.25, 1.0])
    >>> layer(torch.randn(2, 7, 32), Route.uniform(1)).shape
    torch.Size([2, 7, 32])
    """

    def __init__(
        self,
        d_ffn,
        nhead,
        d_model,
        utilization_levels=(1.0,),
        dropout=0.0,
        activation=nn.ReLU,
        normalize_before=False,
    ):
        super().__init__()
        self.self_att = SlimmableMultiheadAttention(d_model, nhead, utilization_levels, dropout)
        self.pos_ffn = SlimmableFeedForward(
            d_ffn, d_model, utilization_levels, dropout=dropout, activation=activation
        )
        self.norm1 = LayerNorm(d_model, eps=1e-6)
        self.norm2 = LayerNorm(d_model, eps=1e-6)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, src: torch.Tensor, route: Route) -> torch.Tensor:
        """Returns the layer output, of the same shape as ``src``.

        ``src`` is [N, M, F], or, for a per-token route, may be the rows
        [P, F] in level order (``route.sort``), which lets a stack of layers
        sort the tokens once instead of once per layer.
        """
        if route.is_routed and src.dim() == 3:
            return route.unsort(self(route.sort(src), route), src.shape)
        return self._forward(src, route, in_place=False)

    def _forward(self, src, route, in_place):
        if in_place and self.normalize_before and not self.training and route.gates is None:
            # Inference: both branches accumulate into the residual stream
            # ``src`` in place (the caller owns it), which saves two
            # activation-sized allocations per layer.
            src = self.self_att(self.norm1(src), route, residual=src)
            return self.pos_ffn(self.norm2(src), route, residual=src)
        src1 = self.norm1(src) if self.normalize_before else src
        # The branch outputs are fresh tensors: adding the residual in place
        # saves an allocation (and its page faults) per branch; a + b == b + a.
        src = self.dropout1(self.self_att(src1, route)).add_(src)
        if not self.normalize_before:
            src = self.norm1(src)
        src1 = self.norm2(src) if self.normalize_before else src
        out = self.dropout2(self.pos_ffn(src1, route)).add_(src)
        if not self.normalize_before:
            out = self.norm2(out)
        return out


class _SlimmableEncoder(nn.Module):
    """A stack of slimmable layers plus the final norm (``TransformerEncoder`` layout)."""

    def __init__(self, num_layers, d_model, final_norm=True, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(
            [SlimmableTransformerLayer(d_model=d_model, **layer_kwargs) for _ in range(num_layers)]
        )
        self.norm = LayerNorm(d_model, eps=1e-6)

    def forward(self, x, route, owned=False):
        """``owned``: ``x`` is a temporary that the layers may update in place."""
        shape = x.shape
        if route.is_routed:
            # [P, F]: level order for the whole stack (per-token ops commute with it)
            x, owned = route.sort(x), True
        in_place = not torch.is_grad_enabled()
        if in_place and not owned:
            x = x.clone()
        for layer in self.layers:
            x = layer._forward(x, route, in_place)
        x = self.norm(x)
        return route.unsort(x, shape) if route.is_routed else x


class SlimmableTransformerBlock(nn.Module):
    """Drop-in replacement for SpeechBrain's ``SBTransformerBlock`` with slimmable width.

    Takes the same constructor arguments as ``SBTransformerBlock`` plus
    ``utilization_levels``; with ``utilization_levels=[1.0]`` it is a stock
    block (same parameters, same outputs).  A state dict of an
    ``SBTransformerBlock`` of the same configuration loads into a block whose
    highest level is 1.0 without missing or unexpected keys.

    Arguments
    ---------
    num_layers : int
        Number of layers.
    d_model : int
        Dimensionality of the representation.
    nhead : int
        Number of attention heads at full width.
    d_ffn : int
        FFN neurons at full width.
    input_shape : tuple
        Unused, kept for signature compatibility.
    kdim : int
        Must be None or ``d_model`` (self-attention only).
    vdim : int
        Must be None or ``d_model``.
    dropout : float
        Dropout rate.
    activation : str
        ``"relu"`` or ``"gelu"``.
    use_positional_encoding : bool
        Add sinusoidal positional encodings (max 2500 positions).
    norm_before : bool
        Pre-norm layers.
    attention_type : str
        Only ``"regularMHA"`` is slimmable.
    utilization_levels : sequence of float
        The levels the block can run at.

    Example
    -------
    >>> block = SlimmableTransformerBlock(1, 32, 4, d_ffn=64, utilization_levels=[0.25, 1.0])
    >>> x = torch.randn(3, 10, 32)
    >>> block(x).shape                                  # full width
    torch.Size([3, 10, 32])
    >>> u = torch.tensor([[0.25] * 5 + [1.0] * 5] * 3)  # per frame
    >>> block(x, utilization=u).shape
    torch.Size([3, 10, 32])
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        nhead: int,
        d_ffn: int = 2048,
        input_shape=None,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        dropout: float = 0.1,
        activation: str = "relu",
        use_positional_encoding: bool = False,
        norm_before: bool = False,
        attention_type: str = "regularMHA",
        utilization_levels: Sequence[float] = (1.0,),
    ):
        super().__init__()
        if attention_type != "regularMHA":
            raise ValueError(f"only attention_type='regularMHA' is slimmable, got {attention_type!r}")
        for name, dim in (("kdim", kdim), ("vdim", vdim)):
            if dim not in (None, d_model):
                raise ValueError(f"{name} must be None or d_model ({d_model}) for self-attention, got {dim}")
        activations = {"relu": nn.ReLU, "gelu": nn.GELU}
        if activation not in activations:
            raise ValueError(f"unknown activation {activation!r}, expected one of {sorted(activations)}")
        self.utilization_levels = check_levels(utilization_levels)
        self.use_positional_encoding = use_positional_encoding
        self.mdl = _SlimmableEncoder(
            num_layers,
            d_model,
            d_ffn=d_ffn,
            nhead=nhead,
            utilization_levels=self.utilization_levels,
            dropout=dropout,
            activation=activations[activation],
            normalize_before=norm_before,
        )
        if use_positional_encoding:
            self.pos_enc = PositionalEncoding(input_size=d_model)

    def forward(
        self,
        x: torch.Tensor,
        utilization: Optional[Union[float, torch.Tensor, Route]] = None,
        gates: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Transforms ``x`` at the given per-frame width.

        Arguments
        ---------
        x : torch.Tensor
            Input of shape [N, M, F].
        utilization : float, torch.Tensor or Route, optional
            None for the highest level, a level value for all frames, a tensor
            [N, M] of level values (sliced path), or a precomputed
            :class:`Route`.
        gates : torch.Tensor, optional
            One-hot (straight-through) gates [N, M, K] over the levels; selects
            the masked path that passes gradients to the gates.

        Returns
        -------
        torch.Tensor
            Output of shape [N, M, F].
        """
        if x.dim() != 3:
            raise ValueError(f"expected input of shape [batch, time, d_model], got {tuple(x.shape)}")
        route = self._route(x, utilization, gates)
        if self.use_positional_encoding:
            return self.mdl(x + self.pos_enc(x), route, owned=True)
        return self.mdl(x, route)

    def _route(self, x, utilization, gates):
        K = len(self.utilization_levels)
        if gates is not None:
            if gates.shape != (*x.shape[:2], K):
                raise ValueError(f"expected gates of shape {(*x.shape[:2], K)}, got {tuple(gates.shape)}")
            return Route.from_gates(gates)
        if isinstance(utilization, Route):
            return utilization
        if utilization is None:
            return Route.uniform(K - 1)
        if not torch.is_tensor(utilization):
            utilization = torch.tensor(float(utilization))
            return Route.uniform(int(level_index(utilization, self.utilization_levels)))
        if utilization.shape != x.shape[:2]:
            raise ValueError(
                f"expected utilization of shape {tuple(x.shape[:2])} (sequences, time), got {tuple(utilization.shape)}"
            )
        return Route.from_levels(level_index(utilization, self.utilization_levels), K)
