"""Gate-to-mask helpers of the masked (training) path (Section III-E, DESIGN).

In training the straight-through one-hot gates P_t [K] must reach the loss, so
every head and FFN neuron is scaled by a mask linear in the gates,
m_n = sum_k P_k [n < width_k] (eqs. 13-16 with hard gates).  Because widths are
nested, the mask is constant on each block of units between two consecutive
widths; :func:`nested_mask` uses that to avoid building the [..., D] mask.
"""

import torch

__all__ = ["nested_mask"]


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


def nested_mask(x, gates, counts):
    """``x * m`` with m_n = sum_k P_k [n < counts[k]] (the masks of eqs. 13-16),
    linear in the gates ``P`` [..., K], for ``x`` [..., counts[-1]]."""
    # [..., K]: block j (units counts[j-1] .. counts[j]) is on at levels k >= j
    scale = gates.flip(-1).cumsum(-1).flip(-1)
    return _NestedScale.apply(x, scale, tuple([0] + list(counts)))
