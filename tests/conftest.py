"""Shared fixtures: tiny configurations that run fast on 2 CPU cores."""

import pytest
import torch

TINY = dict(num_layers=1, d_model=32, nhead=4, d_ffn=64, dropout=0.0, use_positional_encoding=True, norm_before=True)
LEVEL_SETS = [(1.0,), (0.25, 1.0), (0.25, 0.5, 1.0)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


#: The paper's gating module, as a model config stores it.
GATING = {
    "class": "speechbrain_dsn.gating.GatingModule",
    "channels": 32,
    "nhead": 1,
    "d_ffn": 128,
    "context": 64,
    "tau": 1.0,
    "noise": True,
}
#: A tiny DSNSepformer: SepformerWrapper(encoder_out_nchannels=32, masknet_chunksize=10, intra/inter_numlayers=1,
#: intra/inter_nhead=4, intra/inter_dffn=64) with slimmable blocks.
TINY_MODEL = dict(
    num_spks=2,
    kernel_size=16,
    N_encoder_out=32,
    num_dual_blocks=2,
    num_layers=1,
    nhead=4,
    d_ffn=64,
    chunk_size=10,
    norm="ln",
    skip_around_intra=True,
    linear_layer_after_inter_intra=False,
    dropout=0.0,
    gating=GATING,
)


def tiny_model(levels, **overrides):
    """A tiny DSNSepformer with the given levels (config overrides as keywords)."""
    from speechbrain_dsn.model import DSNSepformer

    return DSNSepformer.from_config({**TINY_MODEL, "utilization_levels": list(levels), **overrides})


#: Every hyperparameter DSNBrain reads (DSNBrain.HPARAMS), with the paper's values.
BRAIN_HPARAMS = dict(
    num_spks=2,
    sample_rate=8000,
    kernel_size=16,
    kernel_stride=8,
    alpha=1.0,
    weighting="sd",
    sd_a=0.05,
    sd_b=30.0,
    sd_form="printed",
    segment_ms=96.0,
    gating_dropout=0.3,
    alpha_warmup_epochs=0,
    full_width_warmup_epochs=0,
    step_log=None,
)
#: The d_model 16 model of the brain tests.
MICRO_MODEL = dict(TINY_MODEL, N_encoder_out=16, nhead=2, d_ffn=32)
