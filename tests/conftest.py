"""Shared fixtures: tiny configurations that run fast on 2 CPU cores."""

import pytest
import torch

TINY = dict(num_layers=1, d_model=32, nhead=4, d_ffn=64, dropout=0.0, use_positional_encoding=True, norm_before=True)
LEVEL_SETS = [(1.0,), (0.25, 1.0), (0.25, 0.5, 1.0)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
