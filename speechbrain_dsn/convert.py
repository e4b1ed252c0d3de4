"""Converts inference folders of format 1 (before the model config) to format 2.

Format-1 folders (speechbrain-dsn before the engine split, including the
first bundled ``pretrained/dsn_small``) wire the model from a template that
names ``speechbrain_dsn.slimmable`` and passes the gating options to the
masker.  Their checkpoints need no change: parameter names are the same.
Only ``hyperparams.yaml`` is rewritten, from its model keys::

    python -m speechbrain_dsn.convert path/to/inference_folder [more folders]

The old file is kept as ``hyperparams.v1.yaml``.  The new one is written
atomically (a temporary file, then a rename).
"""

import argparse
import os
import shutil
import sys

import ruamel.yaml

from .inference import FORMAT, inference_hparams

__all__ = ["convert_folder", "is_legacy_folder", "legacy_config"]

#: What the format-1 template hard-coded.
_FIXED = dict(norm="ln", skip_around_intra=True, linear_layer_after_inter_intra=False, dropout=0.0)
_KEYS = (
    "sample_rate",
    "num_spks",
    "utilization_levels",
    "kernel_size",
    "kernel_stride",
    "N_encoder_out",
    "num_dual_blocks",
    "num_layers",
    "nhead",
    "d_ffn",
    "chunk_size",
    "gating_channels",
    "gating_nhead",
    "gating_d_ffn",
    "gating_context",
    "gumbel_tau",
)


def _load(path: str) -> dict:
    # the round-trip loader reads tagged nodes (!new:, !ref) without building them
    with open(path) as fin:
        return ruamel.yaml.YAML(typ="rt").load(fin) or {}


def is_legacy_folder(folder: str) -> bool:
    """True when ``folder/hyperparams.yaml`` is a format-1 file."""
    path = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(path):
        return False
    with open(path) as fin:
        text = fin.read()
    return "model_config" not in text and "speechbrain_dsn.slimmable" in text


def legacy_config(path: str) -> tuple:
    """(model config, sample rate) of a format-1 ``hyperparams.yaml``."""
    values = _load(path)
    missing = [k for k in _KEYS if k not in values]
    if missing:
        raise ValueError(f"{path}: not a speechbrain-dsn format-1 file, it lacks {missing}")
    if int(values["kernel_stride"]) != int(values["kernel_size"]) // 2:
        raise ValueError(
            f"{path}: kernel_stride {values['kernel_stride']} is not half of kernel_size "
            f"{values['kernel_size']}, which SpeechBrain's encoder cannot build"
        )
    levels = [float(u) for u in values["utilization_levels"]]
    gating = None
    if len(levels) > 1:
        gating = {
            "class": "speechbrain_dsn.gating.GatingModule",
            "channels": int(values["gating_channels"]),
            "nhead": int(values["gating_nhead"]),
            "d_ffn": int(values["gating_d_ffn"]),
            "context": int(values["gating_context"]),
            "tau": float(values["gumbel_tau"]),
            "noise": True,
        }
    config = dict(
        utilization_levels=levels,
        num_spks=int(values["num_spks"]),
        kernel_size=int(values["kernel_size"]),
        N_encoder_out=int(values["N_encoder_out"]),
        num_dual_blocks=int(values["num_dual_blocks"]),
        num_layers=int(values["num_layers"]),
        nhead=int(values["nhead"]),
        d_ffn=int(values["d_ffn"]),
        chunk_size=int(values["chunk_size"]),
        **_FIXED,
        gating=gating,
    )
    return config, int(values["sample_rate"])


def convert_folder(folder: str) -> bool:
    """Rewrites a format-1 folder's ``hyperparams.yaml``; False if it needed nothing."""
    path = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no hyperparams.yaml, not an inference folder")
    if not is_legacy_folder(folder):
        return False
    config, sample_rate = legacy_config(path)
    text = inference_hparams(config, sample_rate)
    tmp = path + ".tmp"
    with open(tmp, "w") as fout:
        fout.write(text)
        fout.flush()
        os.fsync(fout.fileno())
    # the old file is copied, then replaced in one rename: the folder always has a hyperparams.yaml
    shutil.copy2(path, os.path.join(folder, "hyperparams.v1.yaml"))
    os.replace(tmp, path)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="inference folders (with hyperparams.yaml)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        try:
            changed = convert_folder(folder)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{folder}: {'converted to format ' + str(FORMAT) if changed else 'already format ' + str(FORMAT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
