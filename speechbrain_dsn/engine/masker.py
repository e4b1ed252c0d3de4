"""The fast masker: ``DSNMasker`` at given levels, channels last, sliced.

:func:`masker_forward` computes exactly what the reference
:meth:`speechbrain_dsn.masker.DSNMasker.forward` computes for a level (or a
level per frame), with the same parameters, but

* keeps the features channels last, [B, C, S, F]: the 1x1 convolutions are
  row products, the inter-chunk layout is a view and the intra-chunk one a
  copy of whole F-vectors, instead of four element-wise transposes per block;
* runs the transformer blocks sliced (:mod:`.layers`) along one route per
  layout (intra [B*S, C], inter [B*C, S]), built once per forward pass;
* runs the output 1x1 convolution on the T frames after the overlap-add
  instead of on the ~2T chunk positions (it is linear and per position);
* without autograd, normalises and activates in place.

Shapes: B batch, F channels, T frames, C chunk size, S chunks.
"""

import torch
import torch.nn.functional as F

from ..levels import chunk_track
from .layers import run_block
from .route import Route

__all__ = ["masker_forward", "overlap_add", "segment"]


def segment(y: torch.Tensor, K: int) -> torch.Tensor:
    """``Dual_Path_Model._Segmentation`` channels last: [B, T, F] -> [B, C, S, F].

    Zero padding, then two chunkings shifted by K // 2, interleaved (chunk 2i
    of the first, 2i + 1 of the second).
    """
    B, T, Fc = y.shape
    P = K // 2
    gap = K - (P + T % K) % K
    # [B, P + T + gap + P, F]
    padded = F.pad(y, (0, 0, P, gap + P))
    n = (padded.shape[1] - P) // K
    first = padded[:, :-P].reshape(B, n, K, Fc).transpose(1, 2)
    second = padded[:, P:].reshape(B, n, K, Fc).transpose(1, 2)
    return torch.stack([first, second], 3).reshape(B, K, 2 * n, Fc)


def overlap_add(y: torch.Tensor, T: int) -> torch.Tensor:
    """``Dual_Path_Model._over_add`` channels last: [B, C, S, F] -> [B, T, F].

    Frame t is position t + P of the padded sequence: the first chunking holds
    it at t + P, the second (shifted by P) at t.
    """
    B, K, S, Fc = y.shape
    P, n = K // 2, S // 2
    # [B, n, 2, K, F]
    chunks = y.view(B, K, n, 2, Fc).permute(0, 2, 3, 1, 4)
    first = chunks[:, :, 0].reshape(B, n * K, Fc)
    second = chunks[:, :, 1].reshape(B, n * K, Fc)
    return first[:, P : P + T] + second[:, :T]


def masker_forward(masker, x: torch.Tensor, level) -> torch.Tensor:
    """Masks [spks, B, F, T] of ``masker`` for the encoded mixture ``x`` [B, F, T].

    ``level`` is a level index (every frame) or a long tensor [B, T] of indices.
    """
    T = x.shape[-1]
    # [B, T, F]
    y = F.linear(masker.norm(x).transpose(1, 2), masker.conv1d.weight[:, :, 0])
    if masker.use_global_pos_enc:
        y = masker.pos_enc(y) + y * (y.size(-1) ** 0.5)
    # [B, C, S, F]
    y = segment(y, masker.K)
    intra_route, inter_route = _routes(masker, level)
    for block in masker.dual_mdl:
        y = _dual_block(block, y, intra_route, inter_route)
    return _head(masker, y, T)


def _routes(masker, level):
    """The intra ([B*S, C]) and inter ([B*C, S]) routes of the chunked levels U'."""
    if isinstance(level, int):
        route = Route.uniform(level)
        return route, route
    # [B, C, S]
    seg = chunk_track(level[:, None].to(torch.float32), masker.K)[:, 0].round().long()
    B, C, S = seg.shape
    K = len(masker.levels)
    return (Route.from_levels(seg.transpose(1, 2).reshape(B * S, C), K), Route.from_levels(seg.reshape(B * C, S), K))


def _dual_block(block, x, intra_route, inter_route):
    """``Dual_Computation_Block.forward`` on [B, C, S, F] with routed blocks."""
    B, C, S, N = x.shape
    # [B*S, C, N]
    intra = x.transpose(1, 2).contiguous().view(B * S, C, N)
    intra = run_block(block.intra_mdl, intra, intra_route)
    if block.linear_layer_after_inter_intra:
        intra = block.intra_linear(intra)
    intra_rows = intra
    # [B, C, S, N]
    intra = intra.view(B, S, C, N).transpose(1, 2)
    # the output buffer of the norm (exporters: none, the norm returns a new tensor)
    out = None if torch.jit.is_tracing() else torch.empty_like(x)
    if block.norm is not None:
        intra = _norm_into(block.intra_norm, intra, out, intra_rows)
    else:
        intra = intra.contiguous() if out is None else out.copy_(intra)
    if block.skip_around_intra:
        intra.add_(x)
    # [B*C, S, N]: a view
    inter = run_block(block.inter_mdl, intra.reshape(B * C, S, N), inter_route)
    if block.linear_layer_after_inter_intra:
        inter = block.inter_linear(inter)
    inter = inter.view(B, C, S, N)
    if block.norm is not None:
        inter = _norm_into(block.inter_norm, inter, None if out is None else torch.empty_like(x), inter)
    return inter.add_(intra)


def _norm_into(norm, x, out, same_values):
    """A ``Dual_Path_Model`` norm (over [B, F, C, S]) of ``x`` kept as [B, C, S, F], written to ``out``.

    ``same_values`` is a contiguous tensor with the values of ``x`` (in any
    order within each batch element) for the statistics.  With ``out=None``
    the result is a new tensor.
    """
    if not (isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 1 and norm.affine):
        # other norms ("gln", "cln", "bn"): run them in their own layout
        normed = norm(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return normed.contiguous() if out is None else out.copy_(normed)
    B, Fc = x.shape[0], x.shape[-1]
    # [B, 1, n]: a float32 sum and a BLAS dot product are fast (var_mean runs
    # single-threaded here); E[x^2] - E[x]^2 is formed in float64
    flat = same_values.view(B, 1, -1)
    n = flat.shape[-1]
    mean = flat.sum(-1)[:, 0].double() / n
    square = torch.bmm(flat, flat.transpose(1, 2))[:, 0, 0].double() / n
    var, mean = (square - mean * mean).clamp_min(0).to(x.dtype), mean.to(x.dtype)
    # [B, F]: the affine is a per-channel scale and shift
    scale = norm.weight[None, :] * torch.rsqrt(var + norm.eps)[:, None]
    shift = norm.bias[None, :] - mean[:, None] * scale
    view = (B,) + (1,) * (x.dim() - 2) + (Fc,)
    if out is None:
        return torch.addcmul(shift.view(view), x, scale.view(view))
    if torch.is_grad_enabled():
        # out= is not differentiable; copy_ is, at the cost of a pass
        return out.copy_(torch.addcmul(shift.view(view), x, scale.view(view)))
    return torch.addcmul(shift.view(view), x, scale.view(view), out=out)


def _head(masker, y, T):
    """PReLU, overlap-add, 1x1 convolutions and gated output on [B, C, S, F]; masks [spks, B, F, T].

    ``conv2d`` runs after the overlap-add, with its bias counted twice, as
    each frame is the sum of exactly two chunk positions.
    """
    B, spks = y.shape[0], masker.num_spks
    # nn.PReLU() of Dual_Path_Model has a single parameter: layout-free
    y = overlap_add(masker.prelu(y), T)
    conv2d = masker.conv2d
    y = F.linear(y, conv2d.weight.flatten(1), None if conv2d.bias is None else 2 * conv2d.bias)
    # [B, T, spks, F]
    y = y.view(B, T, spks, -1)
    out, gate = masker.output[0], masker.output_gate[0]
    a = F.linear(y, out.weight[:, :, 0], out.bias)
    g = F.linear(y, gate.weight[:, :, 0], gate.bias)
    grad = torch.is_grad_enabled()
    # Tanh and Sigmoid, in place without autograd
    y = masker.output[1](a) * masker.output_gate[1](g) if grad else a.tanh_().mul_(g.sigmoid_())
    # [spks, F, T] per example: the weight times the transposed rows of each
    # source (BLAS reads them in place) writes the masks in their stock layout
    w = masker.end_conv1x1.weight[:, :, 0].expand(spks, -1, -1)
    masks = [torch.bmm(w, y[b].permute(1, 2, 0)) for b in range(B)]
    # [spks, B, F, T]
    masks = masks[0].unsqueeze(1) if B == 1 else torch.stack(masks, 1)
    return masker.activation(masks) if grad else masks.relu_()
