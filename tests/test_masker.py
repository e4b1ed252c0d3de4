import pytest
import torch
import torch.nn.functional as F
from speechbrain.lobes.models.dual_path import Dual_Path_Model, SBTransformerBlock

from speechbrain_dsn.engine import overlap_add as _overlap_add
from speechbrain_dsn.engine import segment as _segment
from speechbrain_dsn.gating import GatingModule
from speechbrain_dsn.layers import SlimmableTransformerBlock
from speechbrain_dsn.levels import chunk_track
from speechbrain_dsn.masker import DSNMasker

from .conftest import LEVEL_SETS, TINY

DP = dict(num_layers=2, K=10, linear_layer_after_inter_intra=False)


def _masker(levels):
    intra = SlimmableTransformerBlock(**TINY, utilization_levels=levels)
    inter = SlimmableTransformerBlock(**TINY, utilization_levels=levels)
    return DSNMasker(32, 32, intra, inter, **DP, gating=GatingModule)


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_full_width_equals_stock_dual_path_model(levels):
    stock = Dual_Path_Model(32, 32, SBTransformerBlock(**TINY), SBTransformerBlock(**TINY), **DP).eval()
    dsn = _masker(levels).eval()
    result = dsn.load_state_dict(stock.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith("gating.") for k in result.missing_keys)
    assert bool(result.missing_keys) == (len(levels) > 1)
    x = torch.randn(2, 32, 83)
    torch.testing.assert_close(dsn(x, utilization=1.0), stock(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("levels", LEVEL_SETS[1:])
def test_internal_gating_eval_equals_training_masked_path(levels):
    masker = _masker(levels).eval()
    x = torch.randn(2, 32, 71)
    masks = masker(x)
    used = masker.last_utilization
    assert set(used.unique().tolist()) <= set(levels)
    # the masked training path, fed the gates the eval path chose, matches it
    index = (used[..., None] - torch.tensor(levels)).abs().argmin(-1)
    masker.gating.forward = lambda y: F.one_hot(index, len(levels)).float()
    masker.train()
    torch.testing.assert_close(masker(x), masks, atol=1e-5, rtol=0)
    assert masker.last_gates is not None


def test_external_gating_per_frame_and_whole_input():
    levels = (0.25, 0.5, 1.0)
    masker = _masker(levels).eval()
    x = torch.randn(2, 32, 64)
    track = torch.tensor(levels)[torch.randint(0, 3, (2, 64))]
    out = masker(x, utilization=track)
    assert out.shape == (2, 2, 32, 64)
    assert torch.equal(masker.last_utilization, track)
    assert masker.last_gates is None
    masker(x, utilization=0.5)
    assert masker.last_utilization.shape == (2, 64) and bool((masker.last_utilization == 0.5).all())
    # a constant per-frame track is the same as the whole-input level
    torch.testing.assert_close(masker(x, utilization=torch.full((2, 64), 0.5)), masker(x, utilization=0.5))


def test_training_utilization_carries_gradient_to_the_gate():
    masker = _masker((0.25, 1.0)).train()
    masker(torch.randn(2, 32, 40))
    u = masker.last_utilization
    assert u.requires_grad and set(u.unique().tolist()) <= {0.25, 1.0}
    u.mean().backward()
    assert masker.gating.classifier.weight.grad.abs().sum() > 0


def test_static_masker_has_no_gating():
    masker = _masker((0.5,)).eval()
    assert masker.gating is None and masker.is_static
    masker(torch.randn(1, 32, 30))
    assert bool((masker.last_utilization == 0.5).all())


def test_bad_inputs_are_reported():
    masker = _masker((0.25, 1.0))
    with pytest.raises(ValueError, match="batch, channels, time"):
        masker(torch.randn(32, 40))
    with pytest.raises(ValueError, match="utilization of shape"):
        masker(torch.randn(2, 32, 40), utilization=torch.ones(2, 39))
    with pytest.raises(ValueError, match="not among the levels"):
        masker(torch.randn(2, 32, 40), utilization=0.5)
    with pytest.raises(TypeError, match="SlimmableTransformerBlock"):
        DSNMasker(32, 32, SBTransformerBlock(**TINY), SBTransformerBlock(**TINY))
    with pytest.raises(ValueError, match="share utilization levels"):
        DSNMasker(
            32,
            32,
            SlimmableTransformerBlock(**TINY, utilization_levels=[1.0]),
            SlimmableTransformerBlock(**TINY, utilization_levels=[0.5, 1.0]),
        )
    with pytest.raises(ValueError, match="need a gating module"):
        DSNMasker(
            32,
            32,
            SlimmableTransformerBlock(**TINY, utilization_levels=[0.5, 1.0]),
            SlimmableTransformerBlock(**TINY, utilization_levels=[0.5, 1.0]),
        )


def test_one_block_passed_twice_does_not_tie_weights():
    block = SlimmableTransformerBlock(**TINY)
    masker = DSNMasker(32, 32, block, block, num_layers=1, K=10)
    dual = masker.dual_mdl[0]
    assert dual.intra_mdl is not dual.inter_mdl


def test_track_chunking_matches_feature_segmentation():
    masker = _masker((0.25, 1.0))
    for T in (30, 37, 64):
        track = torch.randn(2, 3, T)
        feats, _ = masker._Segmentation(track, masker.K)
        real, _ = masker._Segmentation(torch.ones(2, 3, T), masker.K)
        chunks = chunk_track(track, masker.K)
        assert chunks.shape == feats.shape
        torch.testing.assert_close(chunks[real > 0], feats[real > 0])


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_inference_mode_path_equals_autograd_path(levels):
    # under inference_mode the masker keeps channels last and the layers add
    # into the residual stream in place; the numbers must not change
    masker = _masker(levels).eval()
    mix_w = torch.randn(2, 32, 57)
    table = torch.tensor(levels)
    for u in (levels[0], levels[-1], table[torch.randint(0, len(levels), (2, 57))]):
        expected = masker(mix_w, utilization=u)
        with torch.inference_mode():
            torch.testing.assert_close(masker(mix_w, utilization=u), expected, atol=1e-5, rtol=0)


def _assert_full_width_matches_stock(options, frames):
    stock = Dual_Path_Model(32, 32, SBTransformerBlock(**TINY), SBTransformerBlock(**TINY), **options).eval()
    block = SlimmableTransformerBlock(**TINY, utilization_levels=(0.25, 1.0))
    dsn = DSNMasker(32, 32, block, block, **options, gating=GatingModule).eval()
    dsn.load_state_dict(stock.state_dict(), strict=False)
    x = torch.randn(2, 32, frames)
    torch.testing.assert_close(dsn(x, utilization=1.0), stock(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("norm", ["ln", "gln", "cln"])
@pytest.mark.parametrize("linear", [False, True])
def test_every_norm_and_linear_option_matches_stock(norm, linear):
    _assert_full_width_matches_stock(dict(num_layers=2, K=10, norm=norm, linear_layer_after_inter_intra=linear), 47)


def test_global_positional_encoding_matches_stock():
    # Dual_Path_Model builds PositionalEncoding(max_length), i.e. max_length is
    # the feature size there; it must equal the channels for stock to run
    _assert_full_width_matches_stock(dict(DP, use_global_pos_enc=True, max_length=32), 61)


@pytest.mark.parametrize("K", [4, 10, 11])
@pytest.mark.parametrize("T", [1, 9, 10, 37])
def test_channels_last_chunking_and_overlap_add_match_stock(K, T):
    # the masker chunks and overlap-adds channels last; SpeechBrain's own
    # Dual_Path_Model methods are the oracle
    stock = Dual_Path_Model(8, 8, SBTransformerBlock(1, 8, 2, d_ffn=16), SBTransformerBlock(1, 8, 2, d_ffn=16), K=K)
    x = torch.randn(2, 8, T)
    chunks, gap = stock._Segmentation(x, K)
    ours = _segment(x.transpose(1, 2), K)
    torch.testing.assert_close(ours.permute(0, 3, 1, 2), chunks, atol=0, rtol=0)
    y = torch.randn_like(chunks)
    torch.testing.assert_close(_overlap_add(y.permute(0, 2, 3, 1), T).transpose(1, 2), stock._over_add(y, gap))


def test_full_width_gradients_equal_stock():
    # the head runs conv2d after the overlap-add (bias counted twice); the
    # gradients of every shared parameter must still be the stock ones
    stock = Dual_Path_Model(32, 32, SBTransformerBlock(**TINY), SBTransformerBlock(**TINY), **DP).eval()
    dsn = _masker((0.25, 1.0)).eval()
    dsn.load_state_dict(stock.state_dict(), strict=False)
    x = torch.randn(2, 32, 53)
    target = torch.randn(2, 2, 32, 53)
    for model, kwargs in ((stock, {}), (dsn, {"utilization": 1.0})):
        ((model(x, **kwargs) - target) ** 2).sum().backward()
    ours = dict(dsn.named_parameters())
    for name, param in stock.named_parameters():
        torch.testing.assert_close(ours[name].grad, param.grad, atol=1e-4, rtol=1e-4, msg=name)
