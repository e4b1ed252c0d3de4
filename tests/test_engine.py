import pytest
import torch
import torch.nn.functional as F
from speechbrain.lobes.models.dual_path import SBTransformerBlock

from speechbrain_dsn import engine
from speechbrain_dsn.engine import Route
from speechbrain_dsn.layers import SlimmableTransformerBlock, SlimmableTransformerLayer

from .conftest import LEVEL_SETS, TINY


def _block(levels, **kw):
    return SlimmableTransformerBlock(**{**TINY, **kw}, utilization_levels=levels).eval()


@pytest.mark.parametrize("levels", LEVEL_SETS)
@pytest.mark.parametrize("norm_before", [True, False])
def test_full_width_equals_stock_block(levels, norm_before):
    stock = SBTransformerBlock(**{**TINY, "num_layers": 2, "norm_before": norm_before}).eval()
    slim = _block(levels, num_layers=2, norm_before=norm_before)
    result = slim.load_state_dict(stock.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(4, 23, 32)
    torch.testing.assert_close(slim(x), stock(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(slim(x, utilization=1.0), stock(x), atol=1e-5, rtol=0)


def _tracks(levels, N=5, M=17):
    K = len(levels)
    yield "random", torch.randint(0, K, (N, M))
    yield "all-low", torch.zeros(N, M, dtype=torch.long)
    yield "all-high", torch.full((N, M), K - 1)
    single = torch.zeros(N, M, dtype=torch.long)
    single[2, 7] = K - 1
    yield "single-frame", single
    yield "empty-middle-group", torch.randint(0, 2, (N, M)) * (K - 1)


@pytest.mark.parametrize("levels", LEVEL_SETS[1:])
def test_sliced_path_equals_masked_path(levels):
    block = _block(levels, num_layers=2)
    x = torch.randn(5, 17, 32)
    table = torch.tensor(levels)
    for name, index in _tracks(levels):
        sliced = block(x, utilization=table[index])
        masked = block(x, gates=F.one_hot(index, len(levels)).float())
        torch.testing.assert_close(sliced, masked, atol=1e-5, rtol=0, msg=name)


def test_low_width_really_changes_the_output_and_ignores_inactive_weights():
    block = _block((0.25, 1.0))
    x = torch.randn(2, 9, 32)
    low = block(x, utilization=0.25)
    assert (low - block(x, utilization=1.0)).abs().max() > 1e-3
    # zeroing every weight that only full width uses leaves U=0.25 unchanged
    layer = block.mdl.layers[0]
    with torch.no_grad():
        w = layer.self_att.att.in_proj_weight.view(3, 32, 32)
        w[:, 8:] = 0
        layer.self_att.att.out_proj.weight[:, 8:] = 0
        layer.pos_ffn.ffn[0].weight[16:] = 0
        layer.pos_ffn.ffn[3].weight[:, 16:] = 0
    torch.testing.assert_close(block(x, utilization=0.25), low)


def test_static_network_has_no_dead_weights():
    block = _block((0.25,))
    layer = block.mdl.layers[0]
    assert layer.self_att.att.in_proj_weight.shape == (3 * 8, 32)  # 1 head of dim 8
    assert layer.pos_ffn.ffn[0].weight.shape == (16, 32)


def test_masked_path_passes_gradients_to_the_gates():
    block = _block((0.25, 0.5, 1.0)).train()
    x = torch.randn(3, 11, 32)
    logits = torch.randn(3, 11, 3, requires_grad=True)
    gates = F.gumbel_softmax(logits, tau=1.0, hard=True)
    block(x, gates=gates).pow(2).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_sliced_path_is_differentiable_for_external_gating():
    block = _block((0.25, 1.0)).train()
    x = torch.randn(3, 11, 32, requires_grad=True)
    u = torch.tensor([0.25, 1.0])[torch.randint(0, 2, (3, 11))]
    block(x, utilization=u).sum().backward()
    assert x.grad.abs().sum() > 0
    assert block.mdl.layers[0].pos_ffn.ffn[0].weight.grad.abs().sum() > 0


def test_bad_inputs_are_reported():
    block = _block((0.25, 1.0))
    with pytest.raises(ValueError, match="shape"):
        block(torch.randn(3, 32))
    with pytest.raises(ValueError, match="utilization"):
        block(torch.randn(2, 5, 32), utilization=torch.ones(2, 4))
    with pytest.raises(ValueError, match="not among the levels"):
        block(torch.randn(2, 5, 32), utilization=0.3)
    with pytest.raises(ValueError, match="regularMHA"):
        SlimmableTransformerBlock(1, 32, 4, attention_type="RelPosMHAXL")


@pytest.mark.parametrize("levels", LEVEL_SETS[1:])
def test_layers_take_sequences_or_level_order_rows(levels):
    layer = SlimmableTransformerLayer(64, 4, 32, levels, normalize_before=True).eval()
    x = torch.randn(5, 17, 32)
    index = torch.randint(0, len(levels), (5, 17))
    route = Route.from_levels(index, len(levels))
    gates = F.one_hot(index, len(levels)).float()
    masked = layer(x, gates)
    torch.testing.assert_close(engine.run_layer(layer, x, route), masked, atol=1e-5, rtol=0)
    rows = engine.run_layer(layer, route.sort(x), route)
    torch.testing.assert_close(route.unsort(rows, x.shape), masked, atol=1e-5, rtol=0)
    for module, run in ((layer.self_att, engine.layers.attention), (layer.pos_ffn, engine.layers.feedforward)):
        torch.testing.assert_close(
            route.unsort(run(module, route.sort(x), route), x.shape), module(x, gates), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("levels", LEVEL_SETS)
@pytest.mark.parametrize("positional", [True, False])
def test_in_place_inference_path_equals_autograd_path_and_keeps_the_input(levels, positional):
    block = _block(levels, num_layers=2, use_positional_encoding=positional)
    x = torch.randn(5, 17, 32)
    x_copy = x.clone()
    table = torch.tensor(levels)
    for name, index in _tracks(levels):
        for u in (table[index], float(table[index[0, 0]])):
            expected = block(x, utilization=u)
            with torch.inference_mode():
                torch.testing.assert_close(block(x, utilization=u), expected, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(x, x_copy, atol=0, rtol=0)
