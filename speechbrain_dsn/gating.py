"""Gating module that predicts a utilization level per frame (Sections III-C, IV-B).

The module analyses the encoded mixture Y [B, F, T] and returns, for every
frame t, a one-hot choice P_t over the K utilization levels (eqs. 3-6):

    bottleneck F -> F' (=32)  ->  one intra-chunk transformer layer
    (1 head, d_ffn 128, chunks of 50 frames with 50 % overlap)
    ->  statistics pooling (mean and std over a 64-frame context)
    ->  linear classifier over the K levels.

In training the choice is sampled with the Gumbel-softmax trick and a
straight-through estimator (``torch.nn.functional.gumbel_softmax(hard=True)``):
the forward pass sees a hard one-hot vector, the backward pass the soft
probabilities.  In evaluation it is the deterministic argmax (eqs. 4-5).
With ``noise=False`` (not in the paper) training uses the same straight-through
estimator without Gumbel noise: the argmax forward, the gradients of
``softmax(logits / tau)``.  Training then draws no random numbers in the gate,
which makes runs comparable across process counts (``tests/test_ddp.py``).

A gating policy is any ``nn.Module`` class built as ``Policy(in_channels=F,
num_levels=K, chunk_size=C, norm=norm, **its own options)`` whose forward maps
the encoded mixture [B, F, T] to one-hot gates [B, T, K] (straight-through in
training, so that eq. 18 trains it).  The recipe names it in YAML
(``gating: !name:speechbrain_dsn.gating.GatingModule``, options below it) and
the masker builds it; a new policy is a new class named there.

Shapes: B batch, F encoder channels, F' bottleneck channels, T frames,
C chunk size, S number of chunks, K levels.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from speechbrain.lobes.models.dual_path import Dual_Path_Model, SBTransformerBlock, select_norm

__all__ = ["GatingModule"]


class GatingModule(nn.Module):
    """Lightweight per-frame classifier over utilization levels.

    With the paper configuration (F=256, F'=32, K=3) it has 21,667
    parameters ("about 21.7k", Section IV-B).

    Arguments
    ---------
    in_channels : int
        Channels F of the encoded mixture.
    num_levels : int
        Number of utilization levels K.
    channels : int
        Bottleneck channels F'.
    nhead : int
        Heads of the intra-chunk transformer layer.
    d_ffn : int
        FFN neurons of the intra-chunk transformer layer.
    chunk_size : int
        Chunk length C of the intra-chunk processing.
    context : int
        Frames of the statistics-pooling window.
    tau : float
        Gumbel-softmax temperature (training only).
    noise : bool
        Gumbel noise in training (the paper); False: straight-through softmax.
    norm : str
        Input normalisation, as in ``Dual_Path_Model`` (``"ln"``).

    Example
    -------
    >>> gate = GatingModule(256, num_levels=3)
    >>> sum(p.numel() for p in gate.parameters())
    21667
    >>> _ = gate.eval()
    >>> gates = gate(torch.randn(2, 256, 120))
    >>> gates.shape, gates.sum(-1).unique().tolist()
    (torch.Size([2, 120, 3]), [1.0])
    """

    # Chunking helpers shared with the masker, so frames line up exactly.
    _padding = Dual_Path_Model._padding
    _Segmentation = Dual_Path_Model._Segmentation
    _over_add = Dual_Path_Model._over_add

    def __init__(
        self,
        in_channels: int,
        num_levels: int,
        channels: int = 32,
        nhead: int = 1,
        d_ffn: int = 128,
        chunk_size: int = 50,
        context: int = 64,
        tau: float = 1.0,
        norm: str = "ln",
        noise: bool = True,
    ):
        super().__init__()
        if num_levels < 2:
            raise ValueError(f"a gating module needs at least 2 levels, got {num_levels}")
        if context < 1:
            raise ValueError(f"context must be a positive number of frames, got {context}")
        self.num_levels = num_levels
        self.chunk_size = chunk_size
        self.context = context
        self.tau = tau
        self.noise = noise
        # bottleneck
        self.norm = select_norm(norm, in_channels, 3)
        self.bottleneck = nn.Conv1d(in_channels, channels, 1, bias=False)
        # local analysis
        self.intra = SBTransformerBlock(
            1, channels, nhead, d_ffn=d_ffn, dropout=0.0, use_positional_encoding=True, norm_before=True
        )
        # classifier on [mean, std]
        self.classifier = nn.Linear(2 * channels, num_levels)

    def logits(self, y: torch.Tensor) -> torch.Tensor:
        """Returns the level logits R [B, T, K] for an encoded mixture [B, F, T]."""
        if y.dim() != 3:
            raise ValueError(f"expected encoded mixture of shape [batch, channels, time], got {tuple(y.shape)}")
        # [B, F', T]
        z = self.bottleneck(self.norm(y))
        B, C, T = z.shape
        # [B, F', C, S]
        chunks, gap = self._Segmentation(z, self.chunk_size)
        S = chunks.shape[-1]
        # [B*S, C, F'] -> intra-chunk transformer with a residual connection
        seq = chunks.permute(0, 3, 2, 1).reshape(B * S, self.chunk_size, C)
        seq = seq + self.intra(seq)
        # [B, F', C, S] -> overlap-add back to [B, F', T]
        chunks = seq.view(B, S, self.chunk_size, C).permute(0, 3, 2, 1)
        z = self._over_add(chunks, gap)
        # [B, 2F', T]: mean and std over a centred window of `context` frames
        half = self.context // 2
        pool = dict(kernel_size=self.context, stride=1, padding=half, count_include_pad=False)
        mean = F.avg_pool1d(z, **pool)[..., :T]
        var = F.avg_pool1d(z * z, **pool)[..., :T] - mean * mean
        stats = torch.cat([mean, var.clamp_min(1e-8).sqrt()], dim=1)
        # [B, T, K]
        return self.classifier(stats.transpose(1, 2))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Returns one-hot gates P [B, T, K].

        In training they are straight-through Gumbel-softmax samples (hard in
        the forward pass, soft gradients; without Gumbel noise if
        ``noise=False``); in evaluation the argmax.
        """
        logits = self.logits(y)
        if self.training and self.noise:
            return F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=-1)
        hard = F.one_hot(logits.argmax(-1), self.num_levels).to(logits.dtype)
        if self.training:
            # gumbel_softmax(hard=True)'s straight-through estimator, with zero noise
            soft = (logits / self.tau).softmax(-1)
            return hard - soft.detach() + soft
        return hard
