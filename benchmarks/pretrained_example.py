#!/usr/bin/env python3
"""Separate the bundled real-speech example with the bundled pretrained DSN.

Loads ``pretrained/dsn_small`` with :class:`speechbrain_dsn.inference.DSNSeparation`
(a SpeechBrain ``SepformerSeparation``), separates ``example/mix.wav`` with
internal gating and with external gating at each level, and prints JSON:
SI-SDRi against ``example/s1.wav`` / ``s2.wav``, the average utilization, the
effective GMAC/s and the mean utilization on silence / one-speaker / overlap
frames (webrtcvad labels of the references). It also draws the utilization
over the spectrogram to ``example/utilization.png``::

    python benchmarks/pretrained_example.py
    python benchmarks/pretrained_example.py --model results/dsn_small/1234/inference --mix my_mix.wav

With ``--make_example CSV_ROW_ID`` it first writes the example from a prepared
test CSV (used once, to build the bundled files).
"""

import argparse
import json
import pathlib
import sys
import tempfile

import soundfile as sf
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechbrain_dsn.complexity import gmacs_per_second, track_gmacs  # noqa: E402
from speechbrain_dsn.data.vad import speech_activity  # noqa: E402
from speechbrain_dsn.inference import DSNSeparation  # noqa: E402
from speechbrain_dsn.metrics import si_sdr_improvement  # noqa: E402
from speechbrain_dsn.plotting import plot_utilization  # noqa: E402
from speechbrain_dsn.segment_types import SEGMENT_TYPES, frame_segment_types  # noqa: E402


def _read(path, rate):
    signal, sr = sf.read(str(path), dtype="float32")
    if sr != rate:
        raise ValueError(f"{path} has {sr} Hz, the model expects {rate} Hz")
    return torch.from_numpy(signal)


def run(model: pathlib.Path, example: pathlib.Path, plot: bool = True) -> dict:
    """Separates ``example/mix.wav``; returns the figures printed by the script."""
    with tempfile.TemporaryDirectory() as savedir:
        separator = DSNSeparation.from_hparams(source=str(model.resolve()), savedir=savedir)
    hp = separator.hparams
    rate, hop, kernel = hp.sample_rate, hp.kernel_stride, hp.kernel_size
    mix = _read(example / "mix.wav", rate)
    targets = torch.stack([_read(example / f"s{k}.wav", rate) for k in (1, 2)], -1)
    active = [speech_activity(targets[:, k].numpy(), rate) for k in range(2)]
    masknet = separator.mods.masknet
    levels = list(masknet.utilization_levels)
    modules = {"encoder": separator.mods.encoder, "masknet": masknet, "decoder": separator.mods.decoder}
    costs = {u: gmacs_per_second(modules, u, 4.0, rate) for u in levels}
    out = {"model": str(model), "mixture": str(example / "mix.wav"), "seconds": round(len(mix) / rate, 2), "modes": {}}
    for mode, utilization in [("internal", None)] + [(f"external_{u:g}", u) for u in levels]:
        with torch.no_grad():
            est = separator.separate_batch(mix[None], utilization=utilization)[0, : len(mix)]
        used = separator.last_utilization[0].cpu()
        frames = frame_segment_types(active, len(used), hop, kernel)
        metrics = si_sdr_improvement(est, targets, mix)
        out["modes"][mode] = {
            "si_sdri": round(float(metrics["si_sdri"]), 2),
            "avg_utilization": round(float(used.mean()), 3),
            "gmacs": round(track_gmacs(costs, used), 2),
            "mean_utilization": {
                name: round(float(used[frames == t].mean()), 3) if (frames == t).any() else None
                for t, name in enumerate(SEGMENT_TYPES)
            },
        }
        if mode == "internal" and plot:
            out["plot"] = plot_utilization(
                mix,
                used,
                rate,
                hop,
                str(example / "utilization.png"),
                levels,
                segment_types=frames,
                title=f"pretrained DSN: SI-SDRi {float(metrics['si_sdri']):.1f} dB, average U {float(used.mean()):.2f}",
            )
    return out


def make_example(csv_path: pathlib.Path, item_id: str, example: pathlib.Path) -> None:
    """Copies one prepared test mixture (mix, s1, s2) into ``example``."""
    import csv

    with open(csv_path, newline="") as handle:
        rows = {row["ID"]: row for row in csv.DictReader(handle)}
    if item_id not in rows:
        raise KeyError(f"{item_id} is not in {csv_path}; IDs: {sorted(rows)[:5]} ...")
    example.mkdir(parents=True, exist_ok=True)
    for name in ("mix", "s1", "s2"):
        signal, rate = sf.read(rows[item_id][f"{name}_wav"], dtype="float32")
        sf.write(example / f"{name}.wav", signal, rate, subtype="PCM_16")
    (example / "SOURCE.txt").write_text(
        f"Test mixture {item_id} of the replication's test speakers ({rows[item_id]['s1_spk']}, "
        f"{rows[item_id]['s2_spk']}), overlap {float(rows[item_id]['overlap']):.2f}.\n"
        "Audio from LibriSpeech (CC BY 4.0) / CMU ARCTIC; attribution in data/demo/SOURCES.md.\n"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=pathlib.Path, default=ROOT / "pretrained" / "dsn_small")
    parser.add_argument(
        "--example",
        type=pathlib.Path,
        default=None,
        help="folder with mix.wav, s1.wav, s2.wav (default: <model>/example)",
    )
    parser.add_argument("--make_example", nargs=2, metavar=("TEST_CSV", "ID"), default=None)
    parser.add_argument("--no_plot", action="store_true")
    args = parser.parse_args(argv)
    example = args.example or args.model / "example"
    if args.make_example:
        make_example(pathlib.Path(args.make_example[0]), args.make_example[1], example)
    print(json.dumps(run(args.model, example, plot=not args.no_plot), indent=1))


if __name__ == "__main__":
    main()
