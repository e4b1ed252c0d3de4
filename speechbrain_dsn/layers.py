"""Slimmable transformer layers: the reference implementation (Section III-E).

Frame m of a sequence runs at a utilization U_m:

* slimmable multi-head attention, eqs. (13)-(15): frame m uses only the first
  ceil(U_m H) heads; for head h the projections, the softmax normalisation and
  the value aggregation are restricted to the frames where h is active;
* slimmable position-wise FFN, eq. (16): frame m uses only the first
  ceil(U_m D) intermediate neurons.

The ``forward`` of every layer here is the *masked path* of the paper: all
heads and neurons are computed and multiplied by masks that are linear in the
one-hot gates P [..., K] (straight-through in training), so the gradients
reach the gating module.  Without gates a layer runs at its highest level.
It is the definition the fast engine (:mod:`speechbrain_dsn.engine`) must
reproduce; the engine runs the same weights *sliced* to a width and never
computes inactive heads or neurons.  For it each layer offers one small
interface: the weights of a head range (:meth:`SlimmableMultiheadAttention.in_proj`,
:meth:`~SlimmableMultiheadAttention.out_weight`) and an FFN on rows of one
width (:meth:`SlimmableFeedForward.sliced`).

Parameter names follow SpeechBrain's ``SBTransformerBlock`` exactly, so a
stock SepFormer checkpoint loads into a full-width slimmable block.

Shapes: N sequences, M sequence length, F model dimension, H heads, d head
dimension, D neurons, K levels.
"""

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding
from speechbrain.nnet.attention import PositionalwiseFeedForward
from speechbrain.nnet.normalization import LayerNorm

from . import engine
from .levels import Levels
from .masks import nested_mask

__all__ = [
    "SlimmableFeedForward",
    "SlimmableMultiheadAttention",
    "SlimmableTransformerBlock",
    "SlimmableTransformerLayer",
    "attend",
]


def attend(qkv: torch.Tensor, key_mask: Optional[torch.Tensor], dropout_p: float) -> torch.Tensor:
    """Scaled dot-product attention of packed projections.

    ``qkv`` [N, M, 3, h, d]; ``key_mask`` bool [N, 1 or h, 1, M] (True:
    attend) or None.  Returns [N, M, h * d].
    """
    N, M, _, h, d = qkv.shape
    # [N, h, M, d] each
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(N, M, h * d)


class _HeadProjections(nn.Module):
    """The attention weights, under the names of ``nn.MultiheadAttention``."""

    def __init__(self, d_model, inner_dim):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner_dim, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * inner_dim))
        self.out_proj = nn.Linear(inner_dim, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)


class SlimmableMultiheadAttention(nn.Module):
    """Multi-head self-attention whose active heads vary per frame (eqs. 13-15).

    Only ``ceil(max(levels) H)`` heads are built, so a static network below
    full width has no dead weights; each head has dimension ``d_model // nhead``.

    Example
    -------
    >>> att = SlimmableMultiheadAttention(32, 4, [0.25, 1.0])
    >>> att(torch.randn(3, 10, 32)).shape
    torch.Size([3, 10, 32])
    >>> att.head_counts
    [1, 4]
    """

    def __init__(self, d_model: int, nhead: int, utilization_levels=(1.0,), dropout: float = 0.0):
        super().__init__()
        if d_model % nhead != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        self.levels = Levels(utilization_levels)
        self.head_dim = d_model // nhead
        self.head_counts = self.levels.widths(nhead)
        self.dropout = dropout
        self.att = _HeadProjections(d_model, self.head_counts[-1] * self.head_dim)

    def in_proj(self, first: int, last: int):
        """Weight [3 h d, F] and bias of the q, k, v projections of heads [first, last)."""
        w, b = self.att.in_proj_weight, self.att.in_proj_bias
        inner = w.shape[0] // 3
        if first == 0 and last * self.head_dim == inner:
            return w, b
        lo, hi = first * self.head_dim, last * self.head_dim
        return w.view(3, inner, -1)[:, lo:hi].reshape(3 * (hi - lo), -1), b.view(3, inner)[:, lo:hi].reshape(-1)

    def out_weight(self, first: int, last: int) -> torch.Tensor:
        """Columns [F, h d] of the output projection that heads [first, last) feed."""
        return self.att.out_proj.weight[:, first * self.head_dim : last * self.head_dim]

    def forward(self, x: torch.Tensor, gates: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention over ``x`` [N, M, F] with per-frame heads from ``gates`` [N, M, K]."""
        N, M, _ = x.shape
        H, d = self.head_counts[-1], self.head_dim
        p = self.dropout if self.training else 0.0
        qkv = F.linear(x, self.att.in_proj_weight, self.att.in_proj_bias).view(N, M, 3, H, d)
        if gates is None:
            return self.att.out_proj(attend(qkv, None, p))
        # [N, M, H]: head h is on at the frames whose level keeps more than h heads
        heads = torch.tensor(self.head_counts, device=x.device)[gates.detach().argmax(-1)]
        on = torch.arange(H, device=x.device) < heads[..., None]
        # [N, H, 1, M]: keys of frames where head h is off are hidden (eq. 13); a
        # head that is off on every frame of a sequence sees all keys (its output
        # is zeroed below anyway), which avoids a softmax over no keys
        key_on = on.transpose(1, 2)
        key_on = key_on | ~key_on.any(-1, keepdim=True)
        key_mask = None if bool(key_on.all()) else key_on[:, :, None, :]
        # [N, M, H d], each head scaled by its (straight-through) mask (eqs. 14-15)
        att = nested_mask(attend(qkv, key_mask, p), gates, [h * d for h in self.head_counts])
        return self.att.out_proj(att)


class SlimmableFeedForward(PositionalwiseFeedForward):
    """Position-wise FFN whose active neurons vary per frame (eq. 16).

    Keeps the ``ffn`` layout of SpeechBrain's ``PositionalwiseFeedForward``
    (Linear, activation, Dropout, Linear), so stock weights load into it.

    Example
    -------
    >>> ffn = SlimmableFeedForward(64, 16, utilization_levels=[0.5, 1.0])
    >>> ffn(torch.randn(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    >>> ffn.neuron_counts
    [32, 64]
    """

    def __init__(self, d_ffn, input_size, utilization_levels=(1.0,), dropout=0.0, activation=nn.ReLU):
        levels = Levels(utilization_levels)
        counts = levels.widths(d_ffn)
        super().__init__(counts[-1], input_size=input_size, dropout=dropout, activation=activation)
        self.levels = levels
        self.neuron_counts = counts

    def forward(self, x: torch.Tensor, gates: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The FFN of ``x`` [..., F], neuron n scaled by sum_k P_k [n < ceil(u_k D)]."""
        lin1, act, drop, lin2 = self.ffn
        hidden = act(lin1(x))
        if gates is not None:
            hidden = nested_mask(hidden, gates, self.neuron_counts)
        return lin2(drop(hidden))

    def sliced(self, rows: torch.Tensor, width: int, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The FFN on ``rows`` [..., F] with the first ``width`` neurons only.

        With ``residual`` (no autograd), the output is added to it in place.
        """
        lin1, act, drop, lin2 = self.ffn
        hidden = F.linear(rows, lin1.weight[:width], lin1.bias[:width])
        # the pre-activation is a temporary without autograd: no second tensor
        hidden = drop(hidden.relu_() if isinstance(act, nn.ReLU) and not torch.is_grad_enabled() else act(hidden))
        if residual is None:
            return F.linear(hidden, lin2.weight[:, :width], lin2.bias)
        out = residual.view(-1, residual.shape[-1])
        out.addmm_(hidden.view(-1, width), engine.column_slice_t(lin2.weight, 0, width)).add_(lin2.bias)
        return residual


class SlimmableTransformerLayer(nn.Module):
    """Transformer encoder layer with slimmable attention and FFN.

    Mirrors SpeechBrain's ``TransformerEncoderLayer`` (regular MHA, regular
    FFN), parameter names included.

    Example
    -------
    >>> layer = SlimmableTransformerLayer(64, 4, 32, [0.25, 1.0])
    >>> layer(torch.randn(2, 7, 32)).shape
    torch.Size([2, 7, 32])
    """

    def __init__(
        self, d_ffn, nhead, d_model, utilization_levels=(1.0,), dropout=0.0, activation=nn.ReLU, normalize_before=False
    ):
        super().__init__()
        self.self_att = SlimmableMultiheadAttention(d_model, nhead, utilization_levels, dropout)
        self.pos_ffn = SlimmableFeedForward(d_ffn, d_model, utilization_levels, dropout=dropout, activation=activation)
        self.norm1 = LayerNorm(d_model, eps=1e-6)
        self.norm2 = LayerNorm(d_model, eps=1e-6)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, src: torch.Tensor, gates: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Masked path: ``src`` [N, M, F], ``gates`` [N, M, K] or None (highest level)."""
        src1 = self.norm1(src) if self.normalize_before else src
        src = src + self.dropout1(self.self_att(src1, gates))
        if not self.normalize_before:
            src = self.norm1(src)
        src1 = self.norm2(src) if self.normalize_before else src
        out = src + self.dropout2(self.pos_ffn(src1, gates))
        return out if self.normalize_before else self.norm2(out)


class _SlimmableEncoder(nn.Module):
    """A stack of slimmable layers plus the final norm (``TransformerEncoder`` layout)."""

    def __init__(self, num_layers, d_model, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(
            [SlimmableTransformerLayer(d_model=d_model, **layer_kwargs) for _ in range(num_layers)]
        )
        self.norm = LayerNorm(d_model, eps=1e-6)

    def forward(self, x, gates=None):
        for layer in self.layers:
            x = layer(x, gates)
        return self.norm(x)


class SlimmableTransformerBlock(nn.Module):
    """Drop-in replacement for SpeechBrain's ``SBTransformerBlock`` with slimmable width.

    Takes the arguments of ``SBTransformerBlock`` plus ``utilization_levels``;
    with ``utilization_levels=[1.0]`` it is a stock block (same parameters,
    same outputs), and a stock state dict loads into a block whose highest
    level is 1.0 without missing or unexpected keys.  ``input_shape``,
    ``kdim`` and ``vdim`` exist for signature compatibility (self-attention only).

    Example
    -------
    >>> block = SlimmableTransformerBlock(1, 32, 4, d_ffn=64, utilization_levels=[0.25, 1.0])
    >>> x = torch.randn(3, 10, 32)
    >>> block(x).shape                                  # highest level
    torch.Size([3, 10, 32])
    >>> u = torch.tensor([[0.25] * 5 + [1.0] * 5] * 3)  # per frame (sliced engine)
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
        self.levels = Levels(utilization_levels)
        self.use_positional_encoding = use_positional_encoding
        self.mdl = _SlimmableEncoder(
            num_layers,
            d_model,
            d_ffn=d_ffn,
            nhead=nhead,
            utilization_levels=self.levels,
            dropout=dropout,
            activation=activations[activation],
            normalize_before=norm_before,
        )
        if use_positional_encoding:
            self.pos_enc = PositionalEncoding(input_size=d_model)

    @property
    def utilization_levels(self) -> tuple:
        return self.levels.values

    def forward(
        self,
        x: torch.Tensor,
        utilization: Optional[Union[float, torch.Tensor, "engine.Route"]] = None,
        gates: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Transforms ``x`` [N, M, F] at a per-frame width.

        ``gates`` [N, M, K] (one-hot, straight-through in training) select the
        masked path.  Otherwise the sliced engine runs ``utilization``: None
        (the highest level), a level for all frames, level values [N, M], or an
        :class:`~speechbrain_dsn.engine.Route`.
        """
        if x.dim() != 3:
            raise ValueError(f"expected input of shape [batch, time, d_model], got {tuple(x.shape)}")
        if gates is None:
            return engine.run_block(self, x, engine.route_for(self.levels, x, utilization))
        if utilization is not None:
            raise ValueError("give gates (masked path) or a utilization (sliced path), not both")
        if gates.shape != (*x.shape[:2], len(self.levels)):
            raise ValueError(f"expected gates of shape {(*x.shape[:2], len(self.levels))}, got {tuple(gates.shape)}")
        if self.use_positional_encoding:
            x = x + self.pos_enc(x)
        return self.mdl(x, gates)
