import pytest
import torch
from speechbrain.lobes.models.dual_path import SepformerWrapper

from speechbrain_dsn import DSNSepformer

TINY = dict(encoder_out_nchannels=32, masknet_chunksize=10, intra_numlayers=1, inter_numlayers=1,
            intra_nhead=4, inter_nhead=4, intra_dffn=64, inter_dffn=64)


def test_sepformer_wrapper_state_dict_loads_with_only_gating_missing():
    stock = SepformerWrapper(**TINY).eval()
    model = DSNSepformer(**TINY, utilization_levels=[0.25, 0.5, 1.0]).eval()
    result = model.load_state_dict(stock.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith("masknet.gating.") for k in result.missing_keys)
    mix = torch.randn(2, 1203)
    torch.testing.assert_close(model(mix, utilization=1.0), stock(mix), atol=1e-4, rtol=0)


@pytest.mark.parametrize("levels", [(1.0,), (0.25, 1.0), (0.25, 0.5, 1.0)])
def test_save_reload_round_trip(tmp_path, levels):
    model = DSNSepformer(**TINY, utilization_levels=levels).eval()
    torch.save(model.state_dict(), tmp_path / "m.ckpt")
    other = DSNSepformer(**TINY, utilization_levels=levels).eval()
    other.load_state_dict(torch.load(tmp_path / "m.ckpt"))
    mix = torch.randn(1, 900)
    torch.testing.assert_close(other(mix), model(mix))
    torch.testing.assert_close(other.last_utilization, model.last_utilization)


def test_forward_shape_and_errors():
    model = DSNSepformer(**TINY, utilization_levels=[0.25, 1.0]).eval()
    assert model(torch.randn(3, 777)).shape == (3, 777, 2)
    assert model.last_utilization.shape[0] == 3
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.randn(777))
