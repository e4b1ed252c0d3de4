"""Computational and memory complexity of the DSN (Table I, Fig. 10 top axis).

* :func:`gmacs_per_second`: GMAC/s of encoder -> masker -> decoder at a fixed
  utilization (or a per-frame track), traced with torchprofile on a 4 s input
  and divided by its duration, as in Section V;
* :func:`active_parameters`: parameters touched at a fixed utilization;
* :func:`slimmable_layer_macs`: closed-form MACs of the slimmable transformer
  layers, which is where all of the width dependence lies;
* :func:`level_gmacs`: GMAC/s at every level from one trace;
* :func:`track_gmacs`: effective GMAC/s of a per-frame utilization track,
  the frame-share-weighted mean of the per-level costs.

``python -m speechbrain_dsn.complexity [hparams.yaml]`` prints a Table-I-style
table; without a YAML it builds the paper configuration in code.
"""

import argparse
import json
import tempfile
import warnings
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

from .layers import SlimmableFeedForward, SlimmableMultiheadAttention
from .levels import Levels, slim_width
from .model import separate, unwrap

__all__ = [
    "TABLE_I",
    "active_parameters",
    "complexity_table",
    "gating_gmacs",
    "gmacs_per_second",
    "level_gmacs",
    "slimmable_layer_macs",
    "track_gmacs",
]

#: Table I of the paper: utilization -> (GMAC/s, parameters in millions).
TABLE_I = {0.125: (5.8, 2.0), 0.25: (9.0, 3.6), 0.5: (15.4, 6.7), 0.75: (21.8, 9.9), 1.0: (28.1, 13.0)}


class _Separator(nn.Module):
    """encoder -> masknet -> decoder at a fixed utilization, for tracing."""

    def __init__(self, encoder, masknet, decoder, utilization):
        super().__init__()
        self.encoder, self.masknet, self.decoder = encoder, masknet, decoder
        self.utilization = utilization

    def forward(self, mix):
        return separate(self.encoder, self.masknet, self.decoder, mix, self.utilization)


def _parts(model):
    """(encoder, masknet, decoder) from a DSNSepformer or a modules dict (DDP-wrapped or not)."""
    get = model.__getitem__ if isinstance(model, (dict, nn.ModuleDict)) else lambda k: getattr(model, k)
    return unwrap(get("encoder")), unwrap(get("masknet")), unwrap(get("decoder"))


def gmacs_per_second(
    model,
    utilization: Optional[Union[float, torch.Tensor]] = None,
    seconds: float = 4.0,
    sample_rate: int = 8000,
) -> float:
    """Traced GMAC/s of the whole separator (torchprofile), as in Table I.

    Arguments
    ---------
    model : DSNSepformer or dict
        A model with ``encoder``, ``masknet`` and ``decoder``, or the
        recipe's ``modules`` dict.
    utilization : float or torch.Tensor, optional
        A level, a per-frame track [1, T] (T encoder frames of the input), or
        None for internal gating (the gating module is then counted too).
    seconds : float
        Input duration.
    sample_rate : int
        Sampling rate.

    Returns
    -------
    float
        Giga multiply-accumulates per second of input.

    Example
    -------
    >>> from speechbrain_dsn.model import DSNSepformer
    >>> model = DSNSepformer.paper_config(utilization_levels=[0.25, 1.0], N_encoder_out=32, chunk_size=10,
    ...                                   num_layers=1, nhead=4, d_ffn=64)
    >>> low, high = (gmacs_per_second(model, u, seconds=0.5) for u in (0.25, 1.0))
    >>> 0 < low < high
    True
    """
    from torchprofile import profile_macs

    encoder, masknet, decoder = _parts(model)
    separator = _Separator(encoder, masknet, decoder, utilization)
    modes = [m.training for m in separator.modules()]
    separator.eval()
    mix = torch.randn(1, int(seconds * sample_rate), device=next(masknet.parameters()).device)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torchprofile warns for every op it does not count (adds, views...).
            warnings.simplefilter("ignore")
            macs = profile_macs(separator, (mix,))
    finally:
        # restore each module's own train/eval mode
        for module, mode in zip(separator.modules(), modes):
            module.training = mode
    return macs / seconds / 1e9


def gating_gmacs(model, seconds: float = 4.0, sample_rate: int = 8000) -> float:
    """Traced GMAC/s of the gating module alone (added under internal gating).

    Example
    -------
    >>> from speechbrain_dsn.model import DSNSepformer
    >>> model = DSNSepformer.paper_config(utilization_levels=[0.125, 1.0])
    >>> round(gating_gmacs(model), 2)
    0.04
    """
    from torchprofile import profile_macs

    encoder, masknet, _ = _parts(model)
    if masknet.gating is None:
        return 0.0
    mix = torch.randn(1, int(seconds * sample_rate), device=next(masknet.parameters()).device)
    was_training = masknet.gating.training
    masknet.gating.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs = profile_macs(masknet.gating, (encoder(mix),))
    finally:
        masknet.gating.train(was_training)
    return macs / seconds / 1e9


def active_parameters(model, utilization: Optional[float] = None, include_gating: bool = False) -> int:
    """Number of parameters used at a fixed utilization (Table I "Params").

    Arguments
    ---------
    model : nn.Module or dict
        A DSN model, its masker, or the recipe's ``modules`` dict.
    utilization : float, optional
        A level of the model; None for the highest.
    include_gating : bool
        Count the gating module (it does not run under external gating).

    Returns
    -------
    int
        Active parameter count.

    Example
    -------
    >>> from speechbrain_dsn.layers import SlimmableTransformerBlock
    >>> block = SlimmableTransformerBlock(1, 32, 4, d_ffn=64, utilization_levels=[0.25, 1.0])
    >>> active_parameters(block, 1.0) == sum(p.numel() for p in block.parameters())
    True
    >>> active_parameters(block, 0.25)
    2344
    """
    modules = list(model.values()) if isinstance(model, (dict, nn.ModuleDict)) else [model]
    total = 0
    for module in modules:
        total += sum(p.numel() for p in module.parameters())
        for sub in module.modules():
            if isinstance(sub, SlimmableMultiheadAttention):
                k = _level(sub.levels, utilization)
                inner_full = sub.head_counts[-1] * sub.head_dim
                inner = sub.head_counts[k] * sub.head_dim
                d_model = sub.att.out_proj.out_features
                # q, k, v rows + biases, and out_proj columns
                total -= (inner_full - inner) * (3 * d_model + 3 + d_model)
            elif isinstance(sub, SlimmableFeedForward):
                k = _level(sub.levels, utilization)
                d_model = sub.ffn[0].in_features
                total -= (sub.neuron_counts[-1] - sub.neuron_counts[k]) * (2 * d_model + 1)
            elif not include_gating and type(sub).__name__ == "GatingModule":
                total -= sum(p.numel() for p in sub.parameters())
    return total


def _level(levels, utilization):
    levels = Levels(levels)
    return levels.top if utilization is None else levels.index(float(utilization))


def slimmable_layer_macs(utilization: float, d_model: int, nhead: int, d_ffn: int, tokens: int, seq_len: int) -> int:
    """Closed-form MACs of one slimmable transformer layer at a fixed width.

    Per token, following eqs. (7)-(16) with h = ceil(U H) heads of size
    d = F / H and n = ceil(U D) neurons: q, k, v projections 3 h d F,
    attention scores and aggregation 2 h d M (sequence length M), output
    projection h d F, FFN 2 n F.  Norms, residuals and biases are width
    independent and left out.

    Arguments
    ---------
    utilization : float
        The width.
    d_model, nhead, d_ffn : int
        Full-width configuration.
    tokens : int
        Number of tokens processed (sequences x length).
    seq_len : int
        Length M of each attended sequence.

    Returns
    -------
    int
        MACs.

    Example
    -------
    >>> slimmable_layer_macs(1.0, 256, 8, 1024, tokens=1, seq_len=50)
    812032
    """
    inner = slim_width(utilization, nhead) * (d_model // nhead)
    neurons = slim_width(utilization, d_ffn)
    per_token = 4 * inner * d_model + 2 * inner * seq_len + 2 * neurons * d_model
    return tokens * per_token


def level_gmacs(model, seconds: float = 4.0, sample_rate: int = 8000) -> Dict[float, float]:
    """GMAC/s at every level of ``model`` from one trace at the highest level.

    Only the slimmable layers depend on the width, and their MACs have a closed
    form (:func:`slimmable_layer_macs`; ``tests/test_complexity.py`` checks it
    against traced differences), so each lower level is the traced top level
    minus the closed-form difference: one trace instead of one per level.

    Example
    -------
    >>> from speechbrain_dsn.model import DSNSepformer
    >>> model = DSNSepformer.paper_config(utilization_levels=[0.25, 1.0], N_encoder_out=32, chunk_size=10,
    ...                                   num_layers=1, nhead=4, d_ffn=64)
    >>> costs = level_gmacs(model, seconds=0.5)
    >>> abs(costs[0.25] - gmacs_per_second(model, 0.25, seconds=0.5)) < 1e-6
    True
    """
    encoder, masknet, _ = _parts(model)
    levels = masknet.levels
    top = gmacs_per_second(model, levels[levels.top], seconds, sample_rate)
    # encoder frames of the traced input, chunked as the masker chunks them
    K = masknet.K
    T = (int(seconds * sample_rate) - encoder.conv1d.kernel_size[0]) // encoder.conv1d.stride[0] + 1
    gap = K - (K // 2 + T % K) % K
    S = 2 * ((T + gap + K // 2) // K)

    def slimmable(k):
        macs = 0
        for block in masknet.dual_mdl:
            for sub, seq_len in ((block.intra_mdl, K), (block.inter_mdl, S)):
                for layer in sub.mdl.layers:
                    att, ffn = layer.self_att, layer.pos_ffn
                    inner, d_model = att.head_counts[k] * att.head_dim, att.att.out_proj.out_features
                    per_token = 4 * inner * d_model + 2 * inner * seq_len + 2 * ffn.neuron_counts[k] * d_model
                    macs += K * S * per_token
        return macs / seconds / 1e9

    return {u: top - slimmable(levels.top) + slimmable(k) for k, u in enumerate(levels)}


def track_gmacs(level_gmacs: Dict[float, float], utilization: torch.Tensor) -> float:
    """Effective GMAC/s of a per-frame utilization track.

    The cost of every component that slims is linear in the share of frames
    at each level (attention up to the packing of active frames), so the
    effective cost is sum_k share_k * GMAC/s(u_k).

    Arguments
    ---------
    level_gmacs : dict
        GMAC/s at each fixed level, e.g. from :func:`gmacs_per_second`.
    utilization : torch.Tensor
        Per-frame utilization, any shape.

    Returns
    -------
    float
        Effective GMAC/s.

    Example
    -------
    >>> track_gmacs({0.125: 4.0, 1.0: 28.0}, torch.tensor([0.125, 1.0, 1.0, 0.125]))
    16.0
    """
    levels = Levels(level_gmacs)
    index = levels.index(utilization.detach().reshape(-1).float().cpu())
    share = torch.bincount(index, minlength=len(levels)).double() / index.numel()
    costs = [level_gmacs[u] for u in sorted(level_gmacs)]
    return float(sum(float(s) * c for s, c in zip(share, costs)))


def complexity_table(build, levels: Sequence[float], seconds: float = 4.0, sample_rate: int = 8000):
    """Rows of (utilization, GMAC/s, params in M, Table I GMAC/s, Table I params).

    ``build(u)`` returns the model to measure at level ``u`` (e.g. a static
    network of that width, or one DSN for every level).
    """
    rows = []
    for u in levels:
        model = build(u)
        ref = TABLE_I.get(round(u, 3), (None, None))
        rows.append(
            dict(
                utilization=u,
                gmacs=round(gmacs_per_second(model, u, seconds, sample_rate), 2),
                params_m=round(active_parameters(model, u) / 1e6, 2),
                table_i_gmacs=ref[0],
                table_i_params_m=ref[1],
            )
        )
    return rows


def _builder(hparams_file, overrides):
    """(build(u), levels of the YAML) from a recipe YAML, or the paper configuration."""
    if hparams_file is None:
        from .model import DSNSepformer

        return (lambda u: DSNSepformer.paper_config(utilization_levels=[u])), None
    from .recipe import load_hparams

    base = load_hparams(hparams_file, overrides)
    levels = list(base["utilization_levels"])
    if len(levels) > 1:
        # one dynamic network measured at each of its levels
        return (lambda u: base["modules"]), levels
    # a static YAML: one network per width, as in Table I
    return (lambda u: load_hparams(hparams_file, {**overrides, "utilization_levels": [u]})["modules"]), levels


def main(argv=None):
    """Command-line entry point: prints a Table-I-style table and its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hparams", nargs="?", help="recipe YAML (default: paper configuration)")
    parser.add_argument("--levels", type=float, nargs="+", help="utilizations (default: Table I / the YAML's levels)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sample_rate", type=int, default=8000)
    args = parser.parse_args(argv)
    # building the recipe's modules creates its checkpoint folder: keep it out of the way
    parser_overrides = {"output_folder": tempfile.mkdtemp(prefix="dsn_complexity_")} if args.hparams else {}
    build, yaml_levels = _builder(args.hparams, parser_overrides)
    levels = args.levels or (yaml_levels if yaml_levels and len(yaml_levels) > 1 else sorted(TABLE_I))
    rows = complexity_table(build, levels, args.seconds, args.sample_rate)
    print(f"{'U':>6} {'GMAC/s':>8} {'Table I':>8} {'Params(M)':>10} {'Table I':>8}")
    for r in rows:
        print(
            f"{r['utilization']:>6} {r['gmacs']:>8.2f} {str(r['table_i_gmacs']):>8} "
            f"{r['params_m']:>10.2f} {str(r['table_i_params_m']):>8}"
        )
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
