import pytest
import torch

from speechbrain_dsn.model import DSNSepformer, stock_sepformer

from .conftest import TINY_MODEL, tiny_model


def test_sepformer_wrapper_state_dict_loads_with_only_gating_missing():
    stock = stock_sepformer({**TINY_MODEL, "utilization_levels": [1.0]}).eval()
    model = tiny_model([0.25, 0.5, 1.0]).eval()
    result = model.load_state_dict(stock.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith("masknet.gating.") for k in result.missing_keys)
    mix = torch.randn(2, 1203)
    torch.testing.assert_close(model(mix, utilization=1.0), stock(mix), atol=1e-4, rtol=0)


@pytest.mark.parametrize("levels", [(1.0,), (0.25, 1.0), (0.25, 0.5, 1.0)])
def test_save_reload_round_trip(tmp_path, levels):
    model = tiny_model(levels).eval()
    torch.save(model.state_dict(), tmp_path / "m.ckpt")
    other = DSNSepformer.from_config(model.get_config()).eval()
    other.load_state_dict(torch.load(tmp_path / "m.ckpt"))
    mix = torch.randn(1, 900)
    torch.testing.assert_close(other(mix), model(mix))
    torch.testing.assert_close(other.last_utilization, model.last_utilization)


def test_forward_shape_and_errors():
    model = tiny_model([0.25, 1.0]).eval()
    assert model(torch.randn(3, 777)).shape == (3, 777, 2)
    assert model.last_utilization.shape[0] == 3
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.randn(777))


def test_config_is_complete_and_strict():
    config = tiny_model([0.25, 1.0]).get_config()
    assert config["gating"]["class"] == "speechbrain_dsn.gating.GatingModule"
    missing = {k: v for k, v in config.items() if k != "chunk_size"}
    with pytest.raises(ValueError, match="lacks the fields \\['chunk_size'\\]"):
        DSNSepformer.from_config(missing)
    with pytest.raises(ValueError, match="unknown fields \\['chunk'\\]"):
        DSNSepformer.from_config({**config, "chunk": 3})
    with pytest.raises(ValueError, match="cannot be imported"):
        DSNSepformer.from_config({**config, "gating": {"class": "speechbrain_dsn.gating.NoSuchPolicy"}})
    with pytest.raises(TypeError):  # keyword-only and required: no silent defaults
        DSNSepformer(utilization_levels=[1.0], num_spks=2)
    # a static network stores no gating policy, whatever it was given
    assert tiny_model([0.5]).get_config()["gating"] is None


class _EveryFrameHighest(torch.nn.Module):
    """A gating policy of its own: the highest level on every frame (straight-through-free)."""

    def __init__(self, in_channels, num_levels, chunk_size, norm, bias=0.0):
        super().__init__()
        self.num_levels, self.bias = num_levels, torch.nn.Parameter(torch.tensor(float(bias)))

    def forward(self, y):
        B, _, T = y.shape
        gates = torch.zeros(B, T, self.num_levels)
        gates[..., -1] = 1.0
        return gates + 0 * self.bias


def test_a_new_gating_policy_is_a_class_named_in_the_config():
    config = {
        **tiny_model([0.25, 1.0]).get_config(),
        "gating": {"class": f"{__name__}._EveryFrameHighest", "bias": 0.5},
    }
    model = DSNSepformer.from_config(config).eval()
    assert isinstance(model.masknet.gating, _EveryFrameHighest) and float(model.masknet.gating.bias) == 0.5
    mix = torch.randn(1, 900)
    torch.testing.assert_close(model(mix), model(mix, utilization=1.0))
    assert bool((model.last_utilization == 1.0).all())
    assert DSNSepformer.from_config(model.get_config()).get_config() == model.get_config()
