"""Dynamic slimmable SepFormer masker (Section III-B, Fig. 1c-d): the reference.

``DSNMasker`` is SpeechBrain's ``Dual_Path_Model`` with slimmable transformer
blocks (:mod:`speechbrain_dsn.layers`) and a gating module.  One frame's path
through it, as in training:

1. the gating module reads the encoded mixture and picks a level per frame,
   one-hot gates P [B, T, K] (straight-through Gumbel-softmax in training,
   argmax in evaluation); U_t = sum_k P_tk u_k;
2. norm and 1x1 convolution, then ``Dual_Path_Model._Segmentation`` cuts the
   features into 50 %-overlapping chunks [B, F, C, S], and
   :func:`~speechbrain_dsn.levels.chunk_track` cuts the gates the same way (U');
3. each dual block runs the intra-chunk transformer on [B*S, C] sequences and
   the inter-chunk one on [B*C, S], each frame at its level (masked path,
   eqs. 13-16), as ``Dual_Computation_Block.forward`` does;
4. ``_over_add`` and the output head of ``Dual_Path_Model`` give the masks.

When no gradient must reach the gates (evaluation, external gating, static
networks, gating dropout) the same numbers come from the fast engine
(:func:`speechbrain_dsn.engine.masker_forward`), which computes only the
active heads and neurons.

Public contract (used by the recipe, the inference interface and the tests):

* ``masknet(mix_w)`` returns masks [num_spks, B, F, T], like ``Dual_Path_Model``;
* ``masknet(mix_w, utilization=u)`` applies external gating, ``u`` a level or
  level values [B, T];
* after each forward, ``last_utilization`` [B, T] holds the utilization used
  (differentiable through the gates in training) and ``last_gates`` the
  gates [B, T, K] (None under external gating or for a static network).

Shapes: B batch, F channels, T frames, C chunk size, S chunks, K levels.
"""

import copy
from typing import Callable, Optional, Union

import torch
from speechbrain.lobes.models.dual_path import Dual_Path_Model

from . import engine
from .layers import SlimmableTransformerBlock
from .levels import Levels, chunk_track

__all__ = ["DSNMasker"]


class DSNMasker(Dual_Path_Model):
    """SepFormer masker whose width follows a per-frame utilization.

    Takes the arguments of ``Dual_Path_Model`` (intra and inter models are
    :class:`~speechbrain_dsn.layers.SlimmableTransformerBlock` with the same
    levels) plus ``gating``, the gating policy: a callable that builds the
    gating module as ``gating(in_channels=F, num_levels=K, chunk_size=C,
    norm=norm)``, e.g. ``functools.partial(GatingModule, channels=32)`` or, in
    YAML, ``!name:speechbrain_dsn.gating.GatingModule``.  A network with more
    than one level needs one; a single level (a static network) builds none.

    Example
    -------
    >>> from functools import partial
    >>> from speechbrain_dsn.gating import GatingModule
    >>> block = SlimmableTransformerBlock(1, 32, 4, d_ffn=64, utilization_levels=[0.25, 1.0])
    >>> masker = DSNMasker(32, 32, block, block, num_layers=1, K=10, gating=GatingModule).eval()
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
        gating: Optional[Callable[..., torch.nn.Module]] = None,
    ):
        for name, block in (("intra_model", intra_model), ("inter_model", inter_model)):
            if not isinstance(block, SlimmableTransformerBlock):
                raise TypeError(f"{name} must be a SlimmableTransformerBlock, got {type(block).__name__}")
        if intra_model.levels != inter_model.levels:
            raise ValueError(
                "intra and inter blocks must share utilization levels, got "
                f"{intra_model.utilization_levels} and {inter_model.utilization_levels}"
            )
        if inter_model is intra_model:
            # one block passed twice would tie the intra and inter weights
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
        self.levels = Levels(intra_model.levels)
        self.gating = None
        if not self.levels.is_static:
            if gating is None:
                raise ValueError(f"utilization levels {self.levels.values} need a gating module (gating=...)")
            self.gating = gating(in_channels=in_channels, num_levels=len(self.levels), chunk_size=K, norm=norm)
        self.register_buffer("level_values", self.levels.tensor(), persistent=False)
        self.last_utilization: Optional[torch.Tensor] = None
        self.last_gates: Optional[torch.Tensor] = None

    @property
    def utilization_levels(self) -> tuple:
        return self.levels.values

    @property
    def is_static(self) -> bool:
        """True for a single-level (static) network."""
        return self.gating is None

    def forward(self, x: torch.Tensor, utilization: Optional[Union[float, torch.Tensor]] = None) -> torch.Tensor:
        """Masks [num_spks, B, F, T] for the encoded mixture ``x`` [B, F, T].

        ``utilization``: None (the gating module, or the single level of a
        static network), a level for every frame, or level values [B, T].
        """
        if x.dim() != 3:
            raise ValueError(f"expected encoded mixture of shape [batch, channels, time], got {tuple(x.shape)}")
        gates, level = self._select_levels(x, utilization)
        if gates is None:
            return engine.masker_forward(self, x, level)

        # Dual_Path_Model.forward, with the gates passed to the blocks
        x = self.conv1d(self.norm(x))
        if self.use_global_pos_enc:
            x = self.pos_enc(x.transpose(1, -1)).transpose(1, -1) + x * (x.size(1) ** 0.5)
        # [B, F, C, S]
        x, gap = self._Segmentation(x, self.K)
        # U': the gates chunked like the features, [B, K, C, S]
        chunked = chunk_track(gates.transpose(1, 2), self.K)
        B, L, C, S = chunked.shape
        intra_gates = chunked.permute(0, 3, 2, 1).reshape(B * S, C, L)
        inter_gates = chunked.permute(0, 2, 3, 1).reshape(B * C, S, L)
        for block in self.dual_mdl:
            x = self._dual_block(block, x, intra_gates, inter_gates)
        # [B, F * spks, C, S] -> [B * spks, F, T]
        x = self.conv2d(self.prelu(x))
        x = self._over_add(x.reshape(B * self.num_spks, -1, C, S), gap)
        x = self.end_conv1x1(self.output(x) * self.output_gate(x))
        # [spks, B, F, T]
        return self.activation(x.view(B, self.num_spks, *x.shape[1:])).transpose(0, 1)

    @staticmethod
    def _dual_block(block, x, intra_gates, inter_gates):
        """``Dual_Computation_Block.forward`` on [B, F, C, S], the blocks gated per frame."""
        B, N, C, S = x.shape
        # [B*S, C, F]
        intra = block.intra_mdl(x.permute(0, 3, 2, 1).reshape(B * S, C, N), gates=intra_gates)
        if block.linear_layer_after_inter_intra:
            intra = block.intra_linear(intra)
        intra = intra.view(B, S, C, N).permute(0, 3, 2, 1)
        if block.norm is not None:
            intra = block.intra_norm(intra)
        if block.skip_around_intra:
            intra = intra + x
        # [B*C, S, F]
        inter = block.inter_mdl(intra.permute(0, 2, 3, 1).reshape(B * C, S, N), gates=inter_gates)
        if block.linear_layer_after_inter_intra:
            inter = block.inter_linear(inter)
        inter = inter.view(B, C, S, N).permute(0, 3, 1, 2)
        if block.norm is not None:
            inter = block.inter_norm(inter)
        return inter + intra

    def _select_levels(self, x, utilization):
        """(gates [B, T, K] or None, level index: an int or [B, T]); records ``last_*``."""
        B, _, T = x.shape
        gates, level = None, None
        if utilization is not None:
            if torch.is_tensor(utilization) and utilization.dim() > 0:
                if utilization.shape != (B, T):
                    raise ValueError(
                        f"expected utilization of shape {(B, T)} (batch, frames), got {tuple(utilization.shape)}"
                    )
                level = self.levels.index(utilization.to(x.device))
            else:
                level = self.levels.index(float(utilization))
        elif self.gating is not None:
            gates = self.gating(x)
            if not self.training:
                level, gates = gates.argmax(-1), None
        else:
            level = 0

        self.last_gates = gates
        if gates is not None:
            # U_t = sum_k P_tk u_k keeps the straight-through gradient for eq. 18
            self.last_utilization = gates @ self.level_values
        elif isinstance(level, int):
            self.last_utilization = self.level_values[level].expand(B, T)
        else:
            self.last_utilization = self.level_values[level]
            if bool((level == level.reshape(-1)[0]).all()):
                level = int(level.reshape(-1)[0])
        return gates, level
