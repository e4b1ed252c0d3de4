"""Slimmable position-wise feed-forward network, eq. (16) of Section III-E.

Frame ``m`` uses only the first ``ceil(U_m D)`` intermediate neurons: the
sliced path multiplies each level's rows by ``W1[:n_k]`` and ``W2[:, :n_k]``;
the masked path (training) computes every neuron and scales it by its gate
mask.

Shapes: N sequences, M sequence length, F model dimension, D neurons,
P routed tokens.
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from speechbrain.nnet.attention import PositionalwiseFeedForward

from .masks import nested_mask
from .routing import Route, check_levels, column_slice_t, slim_width

__all__ = ["SlimmableFeedForward"]


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
        hidden = F.linear(x, lin1.weight[:n], lin1.bias[:n])
        if isinstance(act, nn.ReLU) and not torch.is_grad_enabled():
            # the pre-activation is a temporary: no second [P, n] tensor
            hidden = drop(hidden.relu_())
        else:
            hidden = drop(act(hidden))
        if residual is None:
            return F.linear(hidden, lin2.weight[:, :n], lin2.bias)
        rows = residual.view(-1, residual.shape[-1])
        rows.addmm_(hidden.view(-1, n), column_slice_t(lin2.weight, 0, n)).add_(lin2.bias)
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
            return lin2(drop(nested_mask(act(lin1(x)), route.gates, self.neuron_counts)))
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
        for k, (lo, hi) in enumerate(zip(route.bounds[:-1], route.bounds[1:])):
            if lo < hi:
                sub = None if residual is None else residual[lo:hi]
                parts.append(self._sliced(x[lo:hi], self.neuron_counts[k], sub))
        return torch.cat(parts) if residual is None else residual
