"""Slimmable multi-head self-attention, eqs. (13)-(15) of Section III-E.

Frame ``m`` uses only the first ``ceil(U_m H)`` heads.  For head ``h`` the
projections, the softmax normalisation and the value aggregation are
restricted to the frames where ``h`` is active.  The sliced path computes
each head group only on its active tokens and attends only among them; the
masked path (training) computes every head and scales it by its gate mask.

Shapes: N sequences, M sequence length, F model dimension, H heads, d head
dimension, P routed tokens, Ng packed sequences, L packed length.
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .masks import nested_mask
from .routing import Route, check_levels, column_slice_t, slim_width

__all__ = ["SlimmableMultiheadAttention"]


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
            rows.addmm_(att.view(-1, h * d), column_slice_t(self.att.out_proj.weight, 0, h * d))
            rows.add_(self.att.out_proj.bias)
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
                out[start:].addmm_(att, column_slice_t(self.att.out_proj.weight, first * d, last * d))
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
        att = nested_mask(att, gates, [h * d for h in self.head_counts])
        return self.att.out_proj(att)
