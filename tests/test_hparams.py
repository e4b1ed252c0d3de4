"""Recipe YAMLs are plain HyperPyYAML, and a model survives its inference folder (issue 10)."""

import os
import pathlib

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_dsn.inference import DSNSeparation, export_inference_folder
from speechbrain_dsn.model import DSNSepformer

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "hparams").glob("*.yaml"))
WIRING = "# ######################## wiring: the same in every file"
#: tiny model overrides that keep every recipe fast to build
TINY = {"N_encoder_out": 32, "num_layers": 1, "nhead": 4, "d_ffn": 64, "num_dual_blocks": 1, "chunk_size": 20}


def _load(path, tmp_path, **overrides):
    with open(path) as fin:  # exactly what a SpeechBrain user does
        return load_hyperpyyaml(fin, {"output_folder": str(tmp_path / path.stem), **overrides})


def test_every_recipe_is_complete_hyperpyyaml_with_one_key_set(tmp_path):
    assert len(FILES) >= 7
    reference = None
    for path in FILES:
        hp = _load(path, tmp_path, **TINY)
        assert "extends" not in hp, path.name
        for key in (
            "modules",
            "model",
            "num_spks",
            "utilization_levels",
            "optimizer",
            "lr_scheduler",
            "epoch_counter",
            "checkpointer",
            "train_logger",
            "sample_rate",
            "kernel_stride",
        ):
            assert key in hp, f"{path.name} lacks {key}"
        assert sorted(hp["modules"]) == ["decoder", "encoder", "masknet"]
        assert hp["modules"]["masknet"] is hp["model"].masknet
        assert hp["model"].get_config()["utilization_levels"] == sorted(float(u) for u in hp["utilization_levels"])
        keys = set(hp)
        reference = reference or (path.name, keys)
        assert keys == reference[1], f"{path.name} and {reference[0]} differ in {sorted(keys ^ reference[1])}"


def test_the_wiring_section_is_the_same_text_in_every_recipe():
    texts = {path.name: path.read_text() for path in FILES}
    wiring = {name: text[text.index(WIRING) :] for name, text in texts.items()}
    first = next(iter(wiring.values()))
    assert all(w == first for w in wiring.values()), [n for n, w in wiring.items() if w != first]


def test_command_line_overrides_reach_the_model(tmp_path):
    hp = _load(ROOT / "hparams" / "dsn_3level.yaml", tmp_path, **TINY, utilization_levels=[0.25, 1.0], num_spks=3)
    config = hp["model"].get_config()
    assert config["utilization_levels"] == [0.25, 1.0] and config["num_spks"] == 3
    assert config["N_encoder_out"] == 32 and hp["model"].masknet.num_spks == 3


@pytest.mark.parametrize("name", ["static.yaml", "dsn_2level.yaml", "dsn_3level.yaml"])
def test_yaml_round_trip_through_the_inference_folder(tmp_path, name):
    torch.manual_seed(0)
    hp = _load(ROOT / "hparams" / name, tmp_path, **TINY)
    model = hp["model"].eval()
    folder = export_inference_folder(model.get_config(), hp["modules"], str(tmp_path / "inference"), hp["sample_rate"])
    # the folder stores the config, not a template: it rebuilds the same architecture
    rebuilt = DSNSepformer.from_config(model.get_config()).eval()
    for part in ("encoder", "masknet", "decoder"):
        getattr(rebuilt, part).load_state_dict(torch.load(os.path.join(folder, f"{part}.ckpt")))
    separator = DSNSeparation.from_hparams(source=folder, savedir=str(tmp_path / "pretrained"))
    assert separator.hparams.model.get_config() == model.get_config()
    mix = torch.randn(1, 6000)
    levels = model.get_config()["utilization_levels"]
    with torch.no_grad():
        for u in [None, levels[0], levels[-1]]:
            expected = model(mix, utilization=u)
            torch.testing.assert_close(rebuilt(mix, utilization=u), expected, atol=0, rtol=0)
            torch.testing.assert_close(separator.separate_batch(mix, utilization=u), expected, atol=0, rtol=0)
            torch.testing.assert_close(separator.last_utilization, model.last_utilization, atol=0, rtol=0)
