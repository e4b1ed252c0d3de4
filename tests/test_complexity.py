import pytest
import torch

from speechbrain_dsn import DSNSepformer
from speechbrain_dsn.complexity import active_parameters, gmacs_per_second, slimmable_layer_macs, track_gmacs

CFG = dict(encoder_out_nchannels=32, masknet_chunksize=10, masknet_numlayers=1, intra_numlayers=1,
           inter_numlayers=1, intra_nhead=4, inter_nhead=4, intra_dffn=64, inter_dffn=64)


@pytest.fixture(scope="module")
def model():
    return DSNSepformer(**CFG, utilization_levels=[0.25, 0.5, 1.0]).eval()


def test_traced_macs_fall_with_utilization(model):
    g = [gmacs_per_second(model, u, seconds=0.5) for u in (0.25, 0.5, 1.0)]
    assert g[0] < g[1] < g[2]


def test_closed_form_matches_traced_difference(model):
    # 0.5 s at 8 kHz, kernel 16 / stride 8 -> 499 frames; chunk 10 with 50 %
    # overlap and padding -> 101 chunks; intra sequences of 10, inter of 101.
    seconds, T = 0.5, 499
    K = 10
    gap = K - (K // 2 + T % K) % K
    S = 2 * ((T + gap + K // 2) // K)
    tokens = K * S

    def closed(u):
        return sum(slimmable_layer_macs(u, 32, 4, 64, tokens, M) for M in (K, S))

    for lo, hi in [(0.25, 1.0), (0.5, 1.0)]:
        traced = (gmacs_per_second(model, hi, seconds) - gmacs_per_second(model, lo, seconds)) * 1e9 * seconds
        assert traced == pytest.approx(closed(hi) - closed(lo), rel=1e-6)


def test_full_width_traced_macs_are_stock_minus_the_moved_conv2d(model):
    # every matmul and convolution of the stock SepFormer is counted, at the
    # same size, except conv2d (F -> 2F), which runs on the T frames after
    # the overlap-add instead of on the K x S chunk positions.  (torchprofile
    # also counts some element-wise products, which differ by 0.2 % here;
    # a 1x1 convolution not counted would be 3 %.)
    import warnings

    from speechbrain.lobes.models.dual_path import SepformerWrapper
    from torchprofile import profile_macs

    seconds, T, K = 0.5, 499, 10
    gap = K - (K // 2 + T % K) % K
    S = 2 * ((T + gap + K // 2) // K)
    stock = SepformerWrapper(**CFG).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock_macs = profile_macs(stock, (torch.randn(1, 4000),))
    ours = gmacs_per_second(model, 1.0, seconds) * 1e9 * seconds
    assert ours == pytest.approx(stock_macs - 32 * 64 * (K * S - T), rel=5e-3)


def test_active_parameters_equal_static_network_size():
    dsn = DSNSepformer(**CFG, utilization_levels=[0.25, 0.5, 1.0])
    for u in (0.25, 0.5, 1.0):
        static = DSNSepformer(**CFG, utilization_levels=[u])
        assert active_parameters(dsn, u) == sum(p.numel() for p in static.parameters())
    gating = sum(p.numel() for p in dsn.masknet.gating.parameters())
    assert active_parameters(dsn, 1.0, include_gating=True) == active_parameters(dsn, 1.0) + gating


def test_track_gmacs_is_the_share_weighted_mean():
    track = torch.tensor([0.25] * 3 + [1.0])
    assert track_gmacs({0.25: 1.0, 1.0: 5.0}, track) == pytest.approx(2.0)


@pytest.mark.parametrize("training", [True, False])
def test_counting_leaves_train_eval_modes_alone(model, training):
    model.train(training)
    gmacs_per_second(model, 0.5, seconds=0.25)
    assert all(m.training == training for m in model.modules())
    model.eval()
