"""Slimmable transformer layers whose width follows a per-frame utilization.

This module implements Section III-E of Elminshawi et al., *Dynamic Slimmable
Networks for Efficient Speech Separation* (TASLP 2025):

* slimmable multi-head attention, eqs. (13)-(15): frame ``m`` uses only the
  first ``ceil(U_m H)`` heads; for head ``h`` the projections, the softmax
  normalisation and the value aggregation are restricted to the frames where
  ``h`` is active;
* slimmable position-wise feed-forward network, eq. (16): frame ``m`` uses
  only the first ``ceil(U_m D)`` intermediate neurons.

Every layer has two execution paths that give the same numbers:

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
import torch.nn.functional as F
from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding
from speechbrain.nnet.attention import PositionalwiseFeedForward
from speechbrain.nnet.normalization import LayerNorm

from .routing import Route, check_levels, level_index, slim_width

__all__ = [
    "Route",
    "SlimmableFeedForward",
    "SlimmableMultiheadAttention",
    "SlimmableTransformerBlock",
    "SlimmableTransformerLayer",
]


def _attend(qkv, key_mask, dropout_p):
    """Scaled dot-product attention over packed projections.

    qkv : [N, M, 3, h, d]; key_mask : bool [N, 1 or h, 1, M] (True = attend)
    or None.  Returns [N, M, h * d].
    """
    N, M, _, h, d = qkv.shape
    # [N, h, M, d] each
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
    # [N, M, h * d]
    return out.transpose(1, 2).reshape(N, M, h * d)


class _NestedScale(torch.autograd.Function):
    """Scales the nested width blocks of ``x`` by per-token factors (masked path).

    ``x`` [..., D] is split at ``bounds`` (0 = b_0 <= ... <= b_K = D) into K
    column blocks; block j is multiplied by ``scale[..., j]``.  For nested
    widths the mask of unit n in block j is sum_{k >= j} P_k, the same value
    for the whole block, so this equals ``x * (gates @ table)`` without
    materialising the [..., D] mask, in the forward or the backward pass.
    """

    @staticmethod
    def forward(ctx, x, scale, bounds):
        out = torch.empty_like(x)
        for j in range(len(bounds) - 1):
            lo, hi = bounds[j], bounds[j + 1]
            if lo < hi:
                torch.mul(x[..., lo:hi], scale[..., j : j + 1], out=out[..., lo:hi])
        ctx.save_for_backward(x, scale)
        ctx.bounds = bounds
        return out

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        bounds = ctx.bounds
        grad_x = _NestedScale.apply(grad, scale, bounds) if ctx.needs_input_grad[0] else None
        grad_scale = None
        if ctx.needs_input_grad[1]:
            grad_scale = torch.stack(
                [(grad[..., lo:hi] * x[..., lo:hi]).sum(-1) for lo, hi in zip(bounds[:-1], bounds[1:])], -1
            )
        return grad_x, grad_scale, None


def _nested_mask(x, gates, counts):
    """``x * m`` with m_n = sum_k P_k [n < counts[k]] (the masks of eqs. 13-16),
    linear in the gates ``P`` [..., K], for ``x`` [..., counts[-1]]."""
    # [..., K]: block j (units counts[j-1] .. counts[j]) is on at levels k >= j
    scale = gates.flip(-1).cumsum(-1).flip(-1)
    return _NestedScale.apply(x, scale, tuple([0] + list(counts)))


class _HeadProjections(nn.Module):
    """Holds the attention weights under the names of ``nn.MultiheadAttention``.

    The inner dimension is ``heads * head_dim``, which is smaller than the
    model dimension in a static network below full width.
    """

    def __init__(self, d_model, inner_dim):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner_dim, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * inner_dim))
        self.out_proj = nn.Linear(inner_dim, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        """Initialises the weights as ``nn.MultiheadAttention`` does."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        self.out_proj.reset_parameters()
        nn.init.zeros_(self.out_proj.bias)


class SlimmableMultiheadAttention(nn.Module):
    """Multi-head self-attention whose active heads vary per frame (eqs. 13-15).

    Arguments
    ---------
    d_model : int
        Model dimension F.
    nhead : int
        Number of heads H of the full-width network; each head has
        dimension ``d_model // nhead`` at every width.
    utilization_levels : sequence of float
        The levels this layer can run at.  Only ``ceil(max(levels) * H)``
        heads are built, so a static network below full width has no dead
        weights.
    dropout : float
        Dropout on the attention weights (training only).

    Example
    -------
    >>> att = SlimmableMultiheadAttention(32, 4, [0.25, 1.0])
    >>> x = torch.randn(3, 10, 32)
    >>> att(x, Route.uniform(0)).shape
    torch.Size([3, 10, 32])
    >>> att.head_counts
    [1, 4]
    """

    def __init__(self, d_model: int, nhead: int, utilization_levels=(1.0,), dropout=0.0):
        super().__init__()
        if d_model % nhead != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        self.levels = check_levels(utilization_levels)
        self.head_dim = d_model // nhead
        self.head_counts = [slim_width(u, nhead) for u in self.levels]
        self.dropout = dropout
        self.att = _HeadProjections(d_model, self.head_counts[-1] * self.head_dim)
        # [K, H]: head h is on at level k when h < head_counts[k] (masked path).
        table = torch.zeros(len(self.levels), self.head_counts[-1])
        for k, h in enumerate(self.head_counts):
            table[k, :h] = 1.0
        self.register_buffer("head_table", table, persistent=False)

    def _in_proj(self, first, last):
        """Weight and bias of the q, k, v projections of heads [first, last)."""
        w, b = self.att.in_proj_weight, self.att.in_proj_bias
        inner = w.shape[0] // 3
        if first == 0 and last * self.head_dim == inner:
            return w, b
        lo, hi = first * self.head_dim, last * self.head_dim
        w = w.view(3, inner, -1)[:, lo:hi].reshape(3 * (hi - lo), -1)
        b = b.view(3, inner)[:, lo:hi].reshape(-1)
        return w, b

    def _out_weight(self, first, last):
        return self.att.out_proj.weight[:, first * self.head_dim : last * self.head_dim]

    def forward(self, x: torch.Tensor, route: Route, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attends within each sequence.

        Arguments
        ---------
        x : torch.Tensor
            Input of shape [N, M, F], or, for a per-token route, rows [P, F]
            in level order (``route.sort``).
        route : Route
            Per-token levels (see :class:`Route`).
        residual : torch.Tensor, optional
            Sliced path without autograd only: a contiguous tensor of the
            shape of ``x`` that the output is added to *in place* and
            returned; this saves the allocation of the output.

        Returns
        -------
        torch.Tensor
            Output of the shape of ``x``.
        """
        p = self.dropout if self.training else 0.0
        if route.gates is not None:
            return self._forward_masked(x, route.gates, p)
        if route.level is not None:
            N, M, _ = x.shape
            d, h = self.head_dim, self.head_counts[route.level]
            w, b = self._in_proj(0, h)
            # [N, M, 3, h, d]
            qkv = F.linear(x, w, b).view(N, M, 3, h, d)
            att = _attend(qkv, None, p)
            if residual is None:
                return F.linear(att, self._out_weight(0, h), self.att.out_proj.bias)
            rows = residual.view(-1, residual.shape[-1])
            rows.addmm_(att.view(-1, h * d), self._out_weight(0, h).t()).add_(self.att.out_proj.bias)
            return residual

        if x.dim() == 3:
            if residual is not None:
                raise ValueError("residual needs rows in level order for a per-token route")
            return route.unsort(self._forward_rows(route.sort(x), route, p), x.shape)
        return self._forward_rows(x, route, p, residual)

    def _forward_rows(self, x, route, p, residual=None):
        """Per-token levels on rows [P, F] in level order (see ``Route.sort``).

        Head group g runs on the rows of the tokens where it is active, a
        contiguous suffix, so its projections need no gather; only attention
        sees the tokens packed per sequence.  Consecutive head groups with
        the same active tokens share a pack and run as one group.
        """
        d = self.head_dim
        out = residual
        bounds = [0] + self.head_counts
        g = 0
        while g < len(route.packs):
            pack, first = route.packs[g], bounds[g]
            while g + 1 < len(route.packs) and route.packs[g + 1] is pack:
                g += 1
            last = bounds[g + 1]
            g += 1
            if pack is None or first == last:
                continue
            h = last - first
            if isinstance(pack, str):
                # dense: every token, packed as the original sequences
                start, gather, scatter, key_mask = 0, route.rank, route.order, None
                shape = route.shape
            else:
                start, gather, scatter = pack.start, pack.gather, pack.scatter
                key_mask, shape = pack.valid[:, None, None, :], pack.valid.shape
            w, b = self._in_proj(first, last)
            # [P_g, 3 h d]: projections for the active tokens only (eq. 7 on T^h)
            qkv = F.linear(x[start:], w, b)
            # [Ng, L, 3, h, d]: packed per sequence
            qkv = qkv.index_select(0, gather).view(*shape, 3, h, d)
            # softmax and aggregation over the active frames only (eqs. 13-14)
            att = _attend(qkv, key_mask, p)
            # [P_g, h d], back in level order
            att = att.view(-1, h * d).index_select(0, scatter)
            # eq. 15: only active heads contribute to the output projection
            if out is None:
                out = F.linear(att, self._out_weight(first, last), self.att.out_proj.bias)
            else:
                out[start:].addmm_(att, self._out_weight(first, last).t())
        return out if residual is None else out.add_(self.att.out_proj.bias)

    def _forward_masked(self, x, gates, p):
        """Full-width attention with head masks linear in the gates (training)."""
        N, M, _ = x.shape
        H, d = self.head_counts[-1], self.head_dim
        # [N, M, H]: g_h = sum_k P_k [h < ceil(u_k H)]
        head_mask = gates @ self.head_table
        # [N, H, 1, M]: keys of frames where head h is off are hidden (eq. 13);
        # a head that is off everywhere in a sequence sees all keys, and its
        # output is zeroed by the mask below anyway (avoids an all -inf row).
        key_on = (head_mask.detach() > 0.5).transpose(1, 2)
        key_on = key_on | ~key_on.any(-1, keepdim=True)
        # all keys visible (e.g. every frame at the top level): unmasked kernel
        key_mask = None if bool(key_on.all()) else key_on[:, :, None, :]
        qkv = F.linear(x, self.att.in_proj_weight, self.att.in_proj_bias).view(N, M, 3, H, d)
        # [N, M, H * d], heads scaled by their (straight-through) mask
        att = _attend(qkv, key_mask, p)
        att = _nested_mask(att, gates, [h * d for h in self.head_counts])
        return self.att.out_proj(att)


class SlimmableFeedForward(PositionalwiseFeedForward):
    """Position-wise FFN whose active neurons vary per frame (eq. 16).

    Keeps the ``ffn`` layout of SpeechBrain's ``PositionalwiseFeedForward``
    (Linear, activation, Dropout, Linear), so stock weights load into it.

    Arguments
    ---------
    d_ffn : int
        Number of intermediate neurons D of the full-width network.
    input_size : int
        Model dimension F.
    utilization_levels : sequence of float
        The levels this layer can run at; ``ceil(max(levels) * D)`` neurons
        are built.
    dropout : float
        Dropout after the activation.
    activation : type
        Activation class, e.g. ``torch.nn.ReLU``.

    Example
    -------
    >>> ffn = SlimmableFeedForward(64, 16, utilization_levels=[0.5, 1.0])
    >>> ffn(torch.randn(2, 5, 16), Route.uniform(0)).shape
    torch.Size([2, 5, 16])
    >>> ffn.neuron_counts
    [32, 64]
    """

    def __init__(self, d_ffn, input_size, utilization_levels=(1.0,), dropout=0.0, activation=nn.ReLU):
        levels = check_levels(utilization_levels)
        counts = [slim_width(u, d_ffn) for u in levels]
        super().__init__(counts[-1], input_size=input_size, dropout=dropout, activation=activation)
        self.levels = levels
        self.neuron_counts = counts
        table = (torch.arange(counts[-1])[None, :] < torch.tensor(counts)[:, None]).float()
        # [K, D]: neuron n is on at level k when n < neuron_counts[k]
        self.register_buffer("neuron_table", table, persistent=False)

    def _sliced(self, x, n, residual=None):
        lin1, act, drop, lin2 = self.ffn
        hidden = drop(act(F.linear(x, lin1.weight[:n], lin1.bias[:n])))
        if residual is None:
            return F.linear(hidden, lin2.weight[:, :n], lin2.bias)
        rows = residual.view(-1, residual.shape[-1])
        rows.addmm_(hidden.view(-1, n), lin2.weight[:, :n].t()).add_(lin2.bias)
        return residual

    def forward(self, x: torch.Tensor, route: Route, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Applies the FFN at each token's width.

        Arguments
        ---------
        x : torch.Tensor
            Input of shape [N, M, F], or, for a per-token route, rows [P, F]
            in level order (``route.sort``).
        route : Route
            Per-token levels.
        residual : torch.Tensor, optional
            Sliced path without autograd only: a contiguous tensor of the
            shape of ``x`` that the output is added to in place and returned.

        Returns
        -------
        torch.Tensor
            Output of the shape of ``x``.
        """
        if route.gates is not None:
            lin1, act, drop, lin2 = self.ffn
            # m_n = sum_k P_k [n < ceil(u_k D)], linear in the gates
            return lin2(drop(_nested_mask(act(lin1(x)), route.gates, self.neuron_counts)))
        if route.level is not None:
            return self._sliced(x, self.neuron_counts[route.level], residual)
        if x.dim() == 3:
            if residual is not None:
                raise ValueError("residual needs rows in level order for a per-token route")
            return route.unsort(self._forward_rows(route.sort(x), route), x.shape)
        return self._forward_rows(x, route, residual)

    def _forward_rows(self, x, route, residual=None):
        """Per-token levels on rows [P, F] in level order: one row slice per level."""
        parts = []
        for k, tokens in enumerate(route.level_tokens):
            if tokens is not None:
                lo, hi = route.bounds[k], route.bounds[k + 1]
                sub = None if residual is None else residual[lo:hi]
                parts.append(self._sliced(x[lo:hi], self.neuron_counts[k], sub))
        return torch.cat(parts) if residual is None else residual


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
