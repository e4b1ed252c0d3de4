"""Shared fixtures: tiny configurations that run fast on 2 CPU cores."""

import pytest
import torch

from speechbrain_dsn.config import DSNConfig

TINY = dict(num_layers=1, d_model=32, nhead=4, d_ffn=64, dropout=0.0, use_positional_encoding=True, norm_before=True)
LEVEL_SETS = [(1.0,), (0.25, 1.0), (0.25, 0.5, 1.0)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


#: The paper's gating module, as a model config stores it.
GATING = DSNConfig.paper()["gating"]
#: A tiny DSNSepformer: the paper configuration with d_model 32, chunks of 10, 1 + 1 layers of 4 heads and 64
#: neurons in each of 2 dual blocks (SepformerWrapper(encoder_out_nchannels=32, masknet_chunksize=10, ...)).
TINY_MODEL = {**DSNConfig.paper(), "N_encoder_out": 32, "num_layers": 1, "nhead": 4, "d_ffn": 64, "chunk_size": 10}
del TINY_MODEL["utilization_levels"]


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
