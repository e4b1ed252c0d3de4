"""Warm start of the recipe from a stock SepFormer (``pretrained_separator``)."""

import os

import pytest
import torch
from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBTransformerBlock

from speechbrain_dsn.model import separate
from speechbrain_dsn.recipe import load_hparams, load_pretrained_separator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"N_encoder_out": 32, "num_layers": 1, "nhead": 4, "d_ffn": 64, "num_dual_blocks": 1, "chunk_size": 20}


def _stock(d_ffn=64):
    """A stock SpeechBrain SepFormer with the recipe's wiring at the SMALL size."""
    block = dict(
        num_layers=1, d_model=32, nhead=4, d_ffn=d_ffn, dropout=0.0, use_positional_encoding=True, norm_before=True
    )
    torch.manual_seed(3)
    return {
        "encoder": Encoder(kernel_size=16, out_channels=32),
        "masknet": Dual_Path_Model(
            32,
            32,
            SBTransformerBlock(**block),
            SBTransformerBlock(**block),
            num_layers=1,
            norm="ln",
            K=20,
            num_spks=2,
            skip_around_intra=True,
            linear_layer_after_inter_intra=False,
        ),
        "decoder": Decoder(in_channels=32, out_channels=1, kernel_size=16, stride=8, bias=False),
    }


def _save(modules, folder):
    os.makedirs(folder, exist_ok=True)
    for name, module in modules.items():
        torch.save(module.state_dict(), os.path.join(folder, f"{name}.ckpt"))
    return str(folder)


def _stock_separate(stock, mix):
    mix_w = stock["encoder"](mix)
    masks = stock["masknet"](mix_w)
    return torch.stack([stock["decoder"](mix_w * masks[i]) for i in range(2)], -1)


@pytest.mark.parametrize("yaml", ["dsn_2level.yaml", "static.yaml"])
def test_full_width_outputs_equal_the_stock_sepformer_after_loading(yaml, tmp_path):
    stock = {k: m.eval() for k, m in _stock().items()}
    folder = _save(stock, tmp_path / "stock")
    hp = load_hparams(os.path.join(ROOT, "hparams", yaml), {**SMALL, "output_folder": str(tmp_path / "out")})
    modules = hp["modules"]
    gating_before = [p.clone() for p in modules["masknet"].gating.parameters()] if "dsn" in yaml else []
    load_pretrained_separator(modules, folder, str(tmp_path / "collect"))
    for module in modules.values():
        module.eval()
    mix = torch.randn(1, 4000)
    with torch.no_grad():
        ours = separate(modules["encoder"], modules["masknet"], modules["decoder"], mix, utilization=1.0)
        reference = _stock_separate(stock, mix)
    assert torch.allclose(ours[:, : reference.shape[1]], reference, atol=1e-5)
    # the gating module starts fresh: untouched by the load
    if gating_before:
        assert all(torch.equal(a, b) for a, b in zip(gating_before, modules["masknet"].gating.parameters()))


def test_a_mismatched_checkpoint_is_an_error_naming_the_file(tmp_path):
    folder = _save(_stock(d_ffn=128), tmp_path / "other")
    hp = load_hparams(os.path.join(ROOT, "hparams", "dsn_2level.yaml"), {**SMALL, "output_folder": str(tmp_path)})
    before = hp["modules"]["masknet"].state_dict()
    with pytest.raises(ValueError, match=r"masknet\.ckpt does not fit .*shape"):
        load_pretrained_separator(hp["modules"], folder, str(tmp_path / "collect"))
    after = hp["modules"]["masknet"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded


def test_unexpected_keys_are_an_error(tmp_path):
    stock = _stock()
    folder = _save(stock, tmp_path / "stock")
    state = torch.load(os.path.join(folder, "decoder.ckpt"))
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, os.path.join(folder, "decoder.ckpt"))
    hp = load_hparams(os.path.join(ROOT, "hparams", "dsn_2level.yaml"), {**SMALL, "output_folder": str(tmp_path)})
    with pytest.raises(ValueError, match="unexpected keys"):
        load_pretrained_separator(hp["modules"], folder, str(tmp_path / "collect"))


def test_the_wsj02mix_variant_fits_the_public_sepformer_checkpoint(tmp_path):
    """A stock SepFormer built as speechbrain/sepformer-wsj02mix loads strictly (only gating keys missing)."""
    block = dict(
        num_layers=8, d_model=256, nhead=8, d_ffn=1024, dropout=0.0, use_positional_encoding=True, norm_before=True
    )
    stock = {
        "encoder": Encoder(kernel_size=16, out_channels=256),
        "masknet": Dual_Path_Model(
            256,
            256,
            SBTransformerBlock(**block),
            SBTransformerBlock(**block),
            num_layers=2,
            norm="ln",
            K=250,
            num_spks=2,
            skip_around_intra=True,
            linear_layer_after_inter_intra=False,
        ),
        "decoder": Decoder(in_channels=256, out_channels=1, kernel_size=16, stride=8, bias=False),
    }
    folder = _save(stock, tmp_path / "sepformer-wsj02mix")
    hp = load_hparams(os.path.join(ROOT, "hparams", "dsn_wsj02mix_warmstart.yaml"), {"output_folder": str(tmp_path)})
    load_pretrained_separator(hp["modules"], folder, str(tmp_path / "collect"))
    masknet = hp["modules"]["masknet"]
    assert masknet.K == 250 and len(masknet.dual_mdl[0].intra_mdl.mdl.layers) == 8
    assert torch.equal(
        masknet.state_dict()["dual_mdl.1.inter_mdl.mdl.layers.7.pos_ffn.ffn.3.weight"],
        stock["masknet"].state_dict()["dual_mdl.1.inter_mdl.mdl.layers.7.pos_ffn.ffn.3.weight"],
    )
    # the paper configuration (K = 50, 4 + 4 layers) does not fit that checkpoint
    paper = load_hparams(os.path.join(ROOT, "hparams", "dsn_3level.yaml"), {"output_folder": str(tmp_path)})
    with pytest.raises(ValueError, match="unexpected keys"):
        load_pretrained_separator(paper["modules"], folder, str(tmp_path / "collect2"))
