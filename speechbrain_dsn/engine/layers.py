"""Sliced execution of the slimmable transformer layers (the fast engine).

Runs the layers of :mod:`speechbrain_dsn.layers` so that the work of inactive
heads and neurons is never done.  A :class:`~.route.Route` says how:

* **uniform**: every token at one level, plain matmuls on weights sliced to
  that width (static networks, a whole-input level, gating dropout);
* **routed**: a level per token; a stack of layers sorts the tokens into
  level order once, the FFN runs one row slice per level, and attention runs
  one head group per level on the group's active tokens, packed per sequence.
  This is the mixture-of-experts token-routing pattern applied to nested
  widths.

Without autograd (inference) both branches of a pre-norm layer add their
output into the residual stream in place (``addmm_``), which saves two
activation-sized tensors per layer.  While being traced (``torch.jit.trace``,
e.g. by torchprofile) the engine uses out-of-place ops only, so stock MAC
counters see every product.  The dispatch between these modes lives here
alone; the reference layers define the numbers (``tests/test_engine.py`` and ``tests/test_masker.py``).

Shapes: N sequences, M sequence length, F model dimension, h heads of a
group, d head dimension, P routed tokens.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from ..levels import Levels
from .route import Route

__all__ = ["column_slice_t", "route_for", "run_block", "run_layer", "run_stack"]


def column_slice_t(weight: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``weight[:, lo:hi].t()``, the right operand of ``rows @ W[:, lo:hi].T``.

    A strict slice is returned as a contiguous copy ([hi - lo, out], under
    1 MiB in the paper configuration): MKL runs the narrow products of the
    sliced path faster on it than on the strided view.  The whole weight is
    returned as a view.

    Example
    -------
    >>> w = torch.arange(6.0).view(2, 3)
    >>> column_slice_t(w, 1, 3).tolist()
    [[1.0, 4.0], [2.0, 5.0]]
    """
    cols = weight[:, lo:hi]
    return cols.t() if hi - lo == weight.shape[1] else cols.t().contiguous()


def in_place_allowed() -> bool:
    """In-place accumulation is used without autograd and outside tracing."""
    return not torch.is_grad_enabled() and not torch.jit.is_tracing()


def route_for(levels: Levels, x: torch.Tensor, utilization) -> Route:
    """The route of ``utilization`` (None, a level, level values [N, M] or a Route) for ``x`` [N, M, F]."""
    if isinstance(utilization, Route):
        return utilization
    if utilization is None:
        return Route.uniform(levels.top)
    if not torch.is_tensor(utilization) or utilization.dim() == 0:
        return Route.uniform(levels.index(float(utilization)))
    if utilization.shape != x.shape[:2]:
        raise ValueError(
            f"expected utilization of shape {tuple(x.shape[:2])} (sequences, time), got {tuple(utilization.shape)}"
        )
    return Route.from_levels(levels.index(utilization), len(levels))


def run_block(block, x: torch.Tensor, route: Route) -> torch.Tensor:
    """A ``SlimmableTransformerBlock`` on ``x`` [N, M, F] along ``route``."""
    if block.use_positional_encoding:
        return run_stack(block.mdl, x + block.pos_enc(x), route, owned=True)
    return run_stack(block.mdl, x, route)


def run_stack(encoder, x: torch.Tensor, route: Route, owned: bool = False) -> torch.Tensor:
    """The layers and final norm of a block; ``owned``: ``x`` may be updated in place."""
    shape = x.shape
    if route.is_routed:
        # [P, F]: level order for the whole stack (per-token ops commute with it)
        x, owned = route.sort(x), True
    in_place = in_place_allowed()
    if in_place and not owned:
        x = x.clone()
    for layer in encoder.layers:
        x = run_layer(layer, x, route, in_place)
    x = encoder.norm(x)
    return route.unsort(x, shape) if route.is_routed else x


def run_layer(layer, x: torch.Tensor, route: Route, in_place: bool = False) -> torch.Tensor:
    """One ``SlimmableTransformerLayer``; ``x`` is [N, M, F] or, routed, rows [P, F] in level order."""
    if route.is_routed and x.dim() == 3:
        return route.unsort(run_layer(layer, route.sort(x), route, in_place), x.shape)
    if in_place and layer.normalize_before and not layer.training:
        # both branches accumulate into the residual stream x (owned by the caller)
        x = attention(layer.self_att, layer.norm1(x), route, residual=x)
        return feedforward(layer.pos_ffn, layer.norm2(x), route, residual=x)
    src1 = layer.norm1(x) if layer.normalize_before else x
    # the branch outputs are fresh tensors: adding the residual in place saves an allocation
    x = layer.dropout1(attention(layer.self_att, src1, route)).add_(x)
    if not layer.normalize_before:
        x = layer.norm1(x)
    src1 = layer.norm2(x) if layer.normalize_before else x
    out = layer.dropout2(feedforward(layer.pos_ffn, src1, route)).add_(x)
    return out if layer.normalize_before else layer.norm2(out)


def feedforward(ffn, x: torch.Tensor, route: Route, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The slimmable FFN (eq. 16): each level's rows through its first neurons."""
    if not route.is_routed:
        return ffn.sliced(x, ffn.neuron_counts[route.level], residual)
    parts = []
    for k, (lo, hi) in enumerate(zip(route.bounds[:-1], route.bounds[1:])):
        if lo < hi:
            parts.append(ffn.sliced(x[lo:hi], ffn.neuron_counts[k], None if residual is None else residual[lo:hi]))
    return torch.cat(parts) if residual is None else residual


def attention(att, x: torch.Tensor, route: Route, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The slimmable attention (eqs. 13-15) of ``att``, a ``SlimmableMultiheadAttention``.

    Uniform: the first h heads on every token.  Routed (``x`` rows [P, F] in
    level order): head group g (the heads that levels >= g add) runs on the
    rows of its active tokens, a contiguous suffix, so its projections need no
    gather; only the attention itself sees the tokens packed per sequence.
    Consecutive groups with the same active tokens run as one.
    """
    from ..layers import attend

    p = att.dropout if att.training else 0.0
    d, bias = att.head_dim, att.att.out_proj.bias
    if not route.is_routed:
        N, M, _ = x.shape
        h = att.head_counts[route.level]
        w, b = att.in_proj(0, h)
        # [N, M, h d]
        out = attend(F.linear(x, w, b).view(N, M, 3, h, d), None, p)
        if residual is None:
            return F.linear(out, att.out_weight(0, h), bias)
        rows = residual.view(-1, residual.shape[-1])
        rows.addmm_(out.view(-1, h * d), column_slice_t(att.att.out_proj.weight, 0, h * d)).add_(bias)
        return residual

    out, bounds, g = residual, [0] + att.head_counts, 0
    while g < len(route.packs):
        pack, first = route.packs[g], bounds[g]
        while g + 1 < len(route.packs) and route.packs[g + 1] is pack:
            g += 1
        last = bounds[g + 1]
        g += 1
        if pack is None or first == last:
            continue
        h = last - first
        w, b = att.in_proj(first, last)
        # [P_g, 3 h d]: projections of the active tokens only (eq. 7 on T^h),
        # then [Ng, L, 3, h, d] packed per sequence
        qkv = F.linear(x[pack.start :], w, b).index_select(0, pack.gather).view(*pack.shape, 3, h, d)
        # softmax and aggregation over the active frames only (eqs. 13-14);
        # [P_g, h d] back in level order
        heads = attend(qkv, pack.key_mask, p).view(-1, h * d).index_select(0, pack.scatter)
        # eq. 15: only the active heads feed the output projection
        if out is None:
            out = F.linear(heads, att.out_weight(first, last), bias)
        elif not torch.jit.is_tracing():
            out[pack.start :].addmm_(heads, column_slice_t(att.att.out_proj.weight, first * d, last * d))
        else:
            # traced: an out-of-place product that MAC counters see
            tail = torch.addmm(out[pack.start :], heads, column_slice_t(att.att.out_proj.weight, first * d, last * d))
            out = torch.cat([out[: pack.start], tail])
    return out if residual is None else out.add_(bias)
