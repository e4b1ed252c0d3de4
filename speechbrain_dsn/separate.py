"""Command line: separate recordings with a trained DSN.

    python -m speechbrain_dsn.separate MIX [MIX ...] --out OUTDIR [--model DIR]
        [--utilization U | --budget B] [--device cpu|cuda]

(also installed as ``dsn-separate``).  For each mixture it writes
``<name>_s1.wav``, ``<name>_s2.wav`` ... (float WAV at the model's rate) and
``<name>_utilization.png`` (the utilization over the spectrogram), and prints
one line: duration, average utilization, GMAC/s and real-time factor.  Long
recordings are separated in overlapping windows, written as they finish,
with a progress bar.  ``--model`` defaults to the bundled pretrained DSN.  Bad
input ends the run with a one-line message and exit status 1.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

import soundfile as sf
import torch

__all__ = ["main"]

BUNDLED = pathlib.Path(__file__).resolve().parents[1] / "pretrained" / "dsn_small"


def _parser():
    parser = argparse.ArgumentParser(prog="dsn-separate", description=__doc__.splitlines()[0])
    parser.add_argument("mixtures", nargs="+", help="audio files (any rate; multi-channel files are downmixed)")
    parser.add_argument(
        "--model",
        default=str(BUNDLED) if BUNDLED.is_dir() else None,
        help="inference folder (default: the bundled pretrained DSN)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--utilization", type=float, help="run every frame at this level (external gating)")
    group.add_argument("--budget", type=float, help="average utilization to meet; the gate decides where")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-plot", action="store_true", help="skip the utilization plot")
    return parser


def _progress(name):
    """A tqdm bar per long file (windows), or nothing for a single window."""
    from tqdm import tqdm

    bar = {}

    def update(done, total):
        if total < 2:
            return
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=name, unit="window", leave=False, file=sys.stderr)
        bar["bar"].update(done - bar["bar"].n)
        if done == total:
            bar["bar"].close()

    return update


def separate_one(separator, path, out, utilization=None, budget=None, plot=True):
    """Separates one file into ``out``; returns (duration s, average U, GMAC/s, RTF)."""
    from .data.audio import load_audio

    rate = int(separator.hparams.sample_rate)
    name = pathlib.Path(path).stem
    mix = torch.from_numpy(load_audio(str(path), rate, downmix=True))
    start = time.perf_counter()
    writers, tracks = None, []
    tmp_paths = []
    try:
        for est, track in separator.separate_long(mix, utilization, budget, progress=_progress(name)):
            est = est.numpy()
            if writers is None:
                # written under temporary names, renamed when complete
                tmp_paths = [os.path.join(out, f".{name}_s{i + 1}.wav.part") for i in range(est.shape[1])]
                writers = [sf.SoundFile(p, "w", rate, 1, "FLOAT", format="WAV") for p in tmp_paths]
            for i, writer in enumerate(writers):
                writer.write(est[:, i])
            tracks.append(track)
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers or []:
            writer.close()
        for p in tmp_paths:
            if os.path.exists(p):
                os.remove(p)
        raise
    for i, p in enumerate(tmp_paths):
        os.replace(p, os.path.join(out, f"{name}_s{i + 1}.wav"))
    elapsed = time.perf_counter() - start
    track = torch.cat(tracks)[None]
    report = separator.report_for(track, separator.last_report.mode, budget)
    if plot:
        from .plotting import plot_utilization

        plot_utilization(
            mix,
            track[0],
            rate,
            int(separator.hparams.kernel_stride),
            os.path.join(out, f"{name}_utilization.png"),
            separator.levels.values,
            title=name,
        )
    duration = mix.shape[-1] / rate
    return duration, float(report.average[0]), float(report.gmacs[0]), elapsed / duration


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.model is None:
            raise ValueError("no --model given and no bundled pretrained DSN found")
        if not os.path.isfile(os.path.join(args.model, "hyperparams.yaml")):
            raise FileNotFoundError(f"{args.model}: not an inference folder (no hyperparams.yaml)")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available here")
        stems = {}
        for path in args.mixtures:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such file")
            other = stems.setdefault(pathlib.Path(path).stem, path)
            if other != path:
                raise ValueError(f"{other} and {path} would write the same output files; rename one")
        os.makedirs(args.out, exist_ok=True)
        from .inference import DSNSeparation

        separator = DSNSeparation.from_hparams(
            source=args.model, savedir=tempfile.mkdtemp(prefix="dsn_separate_"), run_opts={"device": args.device}
        )
        separator.level_costs()  # traced once, outside the timed separations
        for path in args.mixtures:
            try:
                duration, average, gmacs, rtf = separate_one(
                    separator, path, args.out, args.utilization, args.budget, plot=not args.no_plot
                )
            except ValueError as err:
                message = str(err)
                raise ValueError(message if str(path) in message else f"{path}: {message}") from None
            print(f"{path}: {duration:.1f} s, average utilization {average:.3f}, {gmacs:.2f} GMAC/s, RTF {rtf:.3f}")
    except (OSError, ValueError, RuntimeError) as err:
        print(f"dsn-separate: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
