"""Dynamic slimmable SepFormer masker (Section III-B, Fig. 1c-d).

``DSNMasker`` is SpeechBrain's ``Dual_Path_Model`` with slimmable transformer
blocks and a gating module.  The gating module predicts a utilization
U = [U_1 ... U_T] from the encoded mixture; U is chunked with the same 50 %
overlap segmentation as the features (U' in R^{C x S}), and the intra-chunk
(M = C) and inter-chunk (M = S) blocks run each frame at its level.

Public contract (relied on by the recipe, the inference path and the tests):

* ``masknet(mix_w)`` returns masks [num_spks, B, F, T], exactly like
  ``Dual_Path_Model``, with internal gating;
* ``masknet(mix_w, utilization=u)`` applies external gating, with ``u`` a
  level value (whole input) or a tensor [B, T] of level values (per frame);
* after each forward, ``masknet.last_utilization`` [B, T] holds the
  utilization actually used (differentiable through the straight-through
  gates during training) and ``masknet.last_gates`` the gates [B, T, K]
  (None under external gating or for a static network).

Shapes: B batch, F channels, T frames, C chunk size, S chunks, K levels.
"""

import copy
from typing import Optional, Union

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.dual_path import Dual_Path_Model

from .gating import GatingModule
from .routing import Route, level_index
from .slimmable import SlimmableTransformerBlock

__all__ = ["DSNMasker"]


def _segment(y, K):
    """``Dual_Path_Model._Segmentation`` on channels-last features.

    ``y`` [B, T, F] -> chunks [B, C, S, F] with C = ``K``: zero padding,
    then two chunkings shifted by K // 2, interleaved (chunk 2i of the first,
    2i + 1 of the second), in one pass over the output.
    """
    B, T, Fc = y.shape
    P = K // 2
    gap = K - (P + T % K) % K
    # [B, P + T + gap + P, F]
    padded = F.pad(y, (0, 0, P, gap + P))
    n = (padded.shape[1] - P) // K
    out = y.new_empty(B, K, n, 2, Fc)
    out[:, :, :, 0] = padded[:, :-P].view(B, n, K, Fc).transpose(1, 2)
    out[:, :, :, 1] = padded[:, P:].view(B, n, K, Fc).transpose(1, 2)
    return out.view(B, K, 2 * n, Fc)


def _overlap_add(y, T):
    """``Dual_Path_Model._over_add`` on channels-last chunks: [B, C, S, F] -> [B, T, F].

    Frame t is position t + P of the padded sequence; the first chunking
    covers padded positions [0, nK), the second [P, nK + P).
    """
    B, K, S, Fc = y.shape
    P, n = K // 2, S // 2
    # [B, n, 2, K, F]
    chunks = y.view(B, K, n, 2, Fc).permute(0, 2, 3, 1, 4)
    out = chunks[:, :, 0].contiguous()
    # [B, nK, F]: padded positions [0, nK)
    flat = out.view(B, n * K, Fc)
    flat[:, P : P + (n - 1) * K].view(B, n - 1, K, Fc).add_(chunks[:, : n - 1, 1])
    flat[:, P + (n - 1) * K :].add_(chunks[:, n - 1, 1, : K - P])
    return flat[:, P : P + T]


class DSNMasker(Dual_Path_Model):
    """SepFormer masker whose width follows a per-frame utilization.

    Takes the arguments of ``Dual_Path_Model`` (the intra and inter models
    must be :class:`~speechbrain_dsn.slimmable.SlimmableTransformerBlock` with
    the same levels) plus the gating options.  With a single level (a static
    network) no gating module is built.

    Arguments
    ---------
    in_channels : int
        Encoder channels.
    out_channels : int
        Channels inside the dual-path blocks.
    intra_model : SlimmableTransformerBlock
        Intra-chunk block (deep-copied for each dual block).
    inter_model : SlimmableTransformerBlock
        Inter-chunk block (deep-copied for each dual block).
    num_layers : int
        Number of dual-path blocks N.
    norm : str
        Normalisation type.
    K : int
        Chunk size C.
    num_spks : int
        Number of sources.
    skip_around_intra : bool
        Skip connection around the intra block.
    linear_layer_after_inter_intra : bool
        Linear layer after the intra and inter blocks.
    use_global_pos_enc : bool
        Global positional encoding.
    max_length : int
        Maximum length for the global positional encoding.
    gating_channels : int
        Bottleneck channels F' of the gating module.
    gating_nhead : int
        Heads of the gating transformer layer.
    gating_d_ffn : int
        FFN neurons of the gating transformer layer.
    gating_context : int
        Statistics-pooling context in frames.
    gumbel_tau : float
        Gumbel-softmax temperature.
    gumbel_noise : bool
        Gumbel noise on the training gates (the paper); False: deterministic
        straight-through softmax gates (see :class:`GatingModule`).

    Example
    -------
    >>> from speechbrain_dsn.slimmable import SlimmableTransformerBlock
    >>> block = SlimmableTransformerBlock(1, 32, 4, d_ffn=64, utilization_levels=[0.25, 1.0])
    >>> masker = DSNMasker(32, 32, block, block, num_layers=1, K=10).eval()
    >>> mix_w = torch.randn(2, 32, 57)
    >>> masker(mix_w).shape
    torch.Size([2, 2, 32, 57])
    >>> masker.last_utilization.shape
    torch.Size([2, 57])
    >>> _ = masker(mix_w, utilization=0.25)
    >>> masker.last_utilization.unique().tolist()
    [0.25]
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        intra_model: SlimmableTransformerBlock,
        inter_model: SlimmableTransformerBlock,
        num_layers: int = 1,
        norm: str = "ln",
        K: int = 200,
        num_spks: int = 2,
        skip_around_intra: bool = True,
        linear_layer_after_inter_intra: bool = True,
        use_global_pos_enc: bool = False,
        max_length: int = 20000,
        gating_channels: int = 32,
        gating_nhead: int = 1,
        gating_d_ffn: int = 128,
        gating_context: int = 64,
        gumbel_tau: float = 1.0,
        gumbel_noise: bool = True,
    ):
        for name, block in (("intra_model", intra_model), ("inter_model", inter_model)):
            if not isinstance(block, SlimmableTransformerBlock):
                raise TypeError(f"{name} must be a SlimmableTransformerBlock, got {type(block).__name__}")
        if intra_model.utilization_levels != inter_model.utilization_levels:
            raise ValueError(
                "intra and inter blocks must share utilization levels, got "
                f"{intra_model.utilization_levels} and {inter_model.utilization_levels}"
            )
        if inter_model is intra_model:
            # One block passed twice would tie the intra and inter weights.
            inter_model = copy.deepcopy(intra_model)
        super().__init__(
            in_channels,
            out_channels,
            intra_model,
            inter_model,
            num_layers=num_layers,
            norm=norm,
            K=K,
            num_spks=num_spks,
            skip_around_intra=skip_around_intra,
            linear_layer_after_inter_intra=linear_layer_after_inter_intra,
            use_global_pos_enc=use_global_pos_enc,
            max_length=max_length,
        )
        self.utilization_levels = intra_model.utilization_levels
        self.register_buffer("levels", torch.tensor(self.utilization_levels), persistent=False)
        self.gating = None
        if len(self.utilization_levels) > 1:
            self.gating = GatingModule(
                in_channels,
                len(self.utilization_levels),
                channels=gating_channels,
                nhead=gating_nhead,
                d_ffn=gating_d_ffn,
                chunk_size=K,
                context=gating_context,
                tau=gumbel_tau,
                norm=norm,
                noise=gumbel_noise,
            )
        self.last_utilization: Optional[torch.Tensor] = None
        self.last_gates: Optional[torch.Tensor] = None

    @property
    def is_static(self) -> bool:
        """True for a single-level (static) network."""
        return self.gating is None

    def forward(
        self, x: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None
    ) -> torch.Tensor:
        """Estimates one mask per source.

        Arguments
        ---------
        x : torch.Tensor
            Encoded mixture of shape [B, F, T].
        utilization : float or torch.Tensor, optional
            External gating: a level for all frames, or a tensor [B, T] of
            level values.  None uses the gating module (or the single level of
            a static network).

        Returns
        -------
        torch.Tensor
            Masks of shape [num_spks, B, F, T].
        """
        if x.dim() != 3:
            raise ValueError(f"expected encoded mixture of shape [batch, channels, time], got {tuple(x.shape)}")
        B, _, T = x.shape
        gates, level = self._select_levels(x, utilization)

        # [B, T, F]: channels last from here on (the 1x1 convolutions are
        # matrix products over rows of channels, and the transformer blocks
        # want channels last anyway)
        y = F.linear(self.norm(x).transpose(1, 2), self.conv1d.weight[:, :, 0])
        if self.use_global_pos_enc:
            y = self.pos_enc(y) + y * (y.size(-1) ** 0.5)
        # [B, C, S, F]
        y = _segment(y, self.K)
        intra_route, inter_route = self._routes(gates, level)
        for block in self.dual_mdl:
            y = self._dual_block(block, y, intra_route, inter_route)
        return self._head(y, T)

    def _head(self, y, T):
        """PReLU, overlap-add, 1x1 convolutions and the gated output of
        ``Dual_Path_Model`` on channels-last chunks [B, C, S, F]; returns
        masks [spks, B, F, T].

        The 1x1 ``conv2d`` is linear and per position, so it commutes with
        the overlap-add: it runs on the T frames instead of the C x S chunk
        positions (about 2T), with its bias counted twice, as each frame is
        the sum of exactly two chunk positions.
        """
        B, spks = y.shape[0], self.num_spks
        # nn.PReLU() of Dual_Path_Model has a single parameter: layout-free
        y = self.prelu(y)
        # [B, T, F]
        y = _overlap_add(y, T)
        conv2d = self.conv2d
        y = F.linear(y, conv2d.weight.flatten(1), None if conv2d.bias is None else 2 * conv2d.bias)
        # [B, T, spks, F]
        y = y.view(B, T, spks, -1)
        out, gate = self.output[0], self.output_gate[0]
        a = F.linear(y, out.weight[:, :, 0], out.bias)
        g = F.linear(y, gate.weight[:, :, 0], gate.bias)
        grad = torch.is_grad_enabled()
        # the same as Tanh and Sigmoid, in place without autograd
        y = self.output[1](a) * self.output_gate[1](g) if grad else a.tanh_().mul_(g.sigmoid_())
        # [spks, F, T] per example: the weight times the transposed rows of
        # each source (BLAS reads them in place) writes the masks in their
        # stock layout
        w = self.end_conv1x1.weight[:, :, 0].expand(spks, -1, -1)
        masks = [torch.bmm(w, y[b].permute(1, 2, 0)) for b in range(B)]
        # [spks, B, F, T]
        masks = masks[0].unsqueeze(1) if B == 1 else torch.stack(masks, 1)
        return self.activation(masks) if grad else masks.relu_()

    def _select_levels(self, x, utilization):
        """Returns (gates [B, T, K] or None, level: int or [B, T] index) and
        records ``last_utilization`` / ``last_gates``."""
        B, _, T = x.shape
        gates, level = None, None
        if utilization is not None:
            if torch.is_tensor(utilization) and utilization.dim() > 0:
                if utilization.shape != (B, T):
                    raise ValueError(
                        f"expected utilization of shape {(B, T)} (batch, frames), got {tuple(utilization.shape)}"
                    )
                level = level_index(utilization.to(x.device), self.utilization_levels)
            else:
                level = int(level_index(torch.as_tensor(float(utilization)), self.utilization_levels))
        elif self.gating is not None:
            gates = self.gating(x)
            if not self.training:
                level, gates = gates.argmax(-1), None
        else:
            level = 0

        self.last_gates = gates
        if gates is not None:
            # U_t = sum_k P_tk u_k keeps the straight-through gradient for eq. 18.
            self.last_utilization = gates @ self.levels
        elif isinstance(level, int):
            self.last_utilization = self.levels[level].expand(B, T)
        else:
            self.last_utilization = self.levels[level]
            if bool((level == level.reshape(-1)[0]).all()):
                level = int(level.reshape(-1)[0])
        return gates, level

    def _chunk_track(self, track):
        """Chunks a per-frame track [B, D, T] into [B, D, C, S] exactly like
        ``_Segmentation`` chunks the features, except that padded positions
        repeat the nearest real frame instead of zeros.  Padded positions thus
        run at their neighbour's level, so a whole-input level also covers the
        padding (as in a stock SepFormer) and every path agrees."""
        B, D, T = track.shape
        P = self.K // 2
        gap = self.K - (P + T % self.K) % self.K
        # [B, D, P + T + gap + P]
        padded = F.pad(track, (P, gap + P), mode="replicate")
        first = padded[..., :-P].reshape(B, D, -1, self.K)
        second = padded[..., P:].reshape(B, D, -1, self.K)
        # interleave the two shifted chunkings: [B, D, C, S]
        return torch.cat([first, second], dim=3).reshape(B, D, -1, self.K).transpose(2, 3)

    def _routes(self, gates, level):
        """Returns the intra ([B*S, C]) and inter ([B*C, S]) routes of the
        chunked per-frame levels U'."""
        K = len(self.utilization_levels)
        if gates is None and isinstance(level, int):
            route = Route.uniform(level)
            return route, route
        if gates is not None:
            # [B, C, S, K]
            seg = self._chunk_track(gates.transpose(1, 2)).permute(0, 2, 3, 1)
        else:
            # [B, C, S]
            seg = self._chunk_track(level[:, None].to(torch.float32))[:, 0].round().long()
        B, C, S = seg.shape[:3]
        intra = seg.transpose(1, 2).reshape(B * S, C, *seg.shape[3:])
        inter = seg.reshape(B * C, S, *seg.shape[3:])
        if gates is not None:
            return Route.from_gates(intra), Route.from_gates(inter)
        return Route.from_levels(intra, K), Route.from_levels(inter, K)

    @classmethod
    def _norm_into(cls, norm, x, out, same_values):
        """``norm`` (a ``Dual_Path_Model`` norm over [B, F, C, S]) applied to
        ``x`` kept as [B, C, S, F], written to ``out``."""
        if isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 1 and norm.affine:
            return cls._group_norm_into(norm, x, out, same_values)
        # other norms ("gln", "cln", "bn"): run them in their own layout
        return out.copy_(norm(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))

    @staticmethod
    def _group_norm_into(norm, x, out, same_values):
        """One-group ``GroupNorm`` of ``x`` [B, ..., F] (channels last), written to ``out``.

        Same statistics as ``norm`` over each batch element; channels are the
        last dimension, so the affine is a per-channel scale and shift.
        ``same_values`` is a contiguous tensor holding the values of ``x``
        (in any order within each batch element) for the statistics.
        """
        B, Fc = x.shape[0], x.shape[-1]
        # [B, 1, n]: var_mean runs single-threaded here, and a float64 sum
        # would first copy the whole tensor; a float32 sum and a BLAS dot
        # product are fast, and E[x^2] - E[x]^2 is formed in float64
        flat = same_values.view(B, 1, -1)
        n = flat.shape[-1]
        mean = flat.sum(-1)[:, 0].double() / n
        square = torch.bmm(flat, flat.transpose(1, 2))[:, 0, 0].double() / n
        var, mean = (square - mean * mean).clamp_min(0).to(x.dtype), mean.to(x.dtype)
        # [B, F]
        scale = norm.weight[None, :] * torch.rsqrt(var + norm.eps)[:, None]
        shift = norm.bias[None, :] - mean[:, None] * scale
        view = (B,) + (1,) * (x.dim() - 2) + (Fc,)
        if torch.is_grad_enabled():
            # out= is not differentiable; copy_ is, at the cost of a pass
            return out.copy_(torch.addcmul(shift.view(view), x, scale.view(view)))
        return torch.addcmul(shift.view(view), x, scale.view(view), out=out)

    @classmethod
    def _dual_block(cls, block, x, intra_route, inter_route):
        """``Dual_Computation_Block.forward`` with routes passed to the blocks,
        on features kept as [B, C, S, F] (channels last).

        The inter-chunk layout [B*C, S, F] is then a view, the intra-chunk one
        a copy of whole F-vectors, and the norms run on the same layout; the
        stock layout [B, F, C, S] costs four element-wise transposes per block.
        """
        B, C, S, N = x.shape
        # [B*S, C, N]
        intra = x.transpose(1, 2).contiguous().view(B * S, C, N)
        intra = block.intra_mdl(intra, utilization=intra_route)
        if block.linear_layer_after_inter_intra:
            intra = block.intra_linear(intra)
        # [B, C, S, N]
        intra_rows = intra
        intra = intra.view(B, S, C, N).transpose(1, 2)
        out = torch.empty_like(x)
        if block.norm is not None:
            intra = cls._norm_into(block.intra_norm, intra, out, intra_rows)
        else:
            intra = out.copy_(intra)
        if block.skip_around_intra:
            intra.add_(x)
        # [B*C, S, N]: a view
        inter = block.inter_mdl(intra.view(B * C, S, N), utilization=inter_route)
        if block.linear_layer_after_inter_intra:
            inter = block.inter_linear(inter)
        inter = inter.view(B, C, S, N)
        if block.norm is not None:
            inter = cls._norm_into(block.inter_norm, inter, torch.empty_like(x), inter)
        return inter.add_(intra)
