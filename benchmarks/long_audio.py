"""Long recordings: peak memory and real-time factor of windowed separation (issue 11).

For conversations of 1, 10 and 60 minutes (two speakers of the bundled demo
corpus taking turns, with pauses and at most 20 % overlap) it separates the
whole recording the way ``dsn-separate`` does (windows of
``DSNSeparation.window_seconds``, outputs written to WAV files as the windows
finish) at U = 0.125, at U = 1.0 and with internal gating, each run in a fresh
process on ``--threads`` CPU threads, and prints JSON:

* ``peak_rss_mib``: the peak resident memory of that process (``ru_maxrss``),
  and ``baseline_rss_mib`` its peak after loading the model, before reading
  and separating the recording (written beforehand by the parent process);
* ``rtf``: separation time / audio duration;
* the targets of the issue: 10 min peak <= 1.2 x 1 min peak and < 2 GiB,
  RTF at U = 0.125 <= 0.08, internal-gating RTF <= 0.5 x RTF at U = 1.0.

Usage: ``python benchmarks/long_audio.py [--model DIR] [--minutes 1 10 60] [--threads 2]``
(default model: the bundled ``pretrained/dsn_small``).
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = {"U=0.125": 0.125, "U=1.0": 1.0, "internal": None}


def conversation(minutes: float, rate: int = 8000, seed: int = 0, max_overlap: float = 0.2):
    """Two demo speakers taking turns for ``minutes``: (mixture [L] float32, overlap share of speech)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    speakers = sorted(p for p in (ROOT / "data" / "demo").iterdir() if p.is_dir())[:2]
    turns = [[sf.read(f, dtype="float32")[0] for f in sorted(s.glob("*.flac"))] for s in speakers]
    length = int(minutes * 60 * rate)
    tracks = np.zeros((2, length), dtype=np.float32)
    pos, who, k = 0, 0, 0
    while pos < length:
        utt = turns[who][k % len(turns[who])]
        utt = utt / (np.abs(utt).max() + 1e-9) * 0.5
        end = min(pos + len(utt), length)
        tracks[who, pos:end] += utt[: end - pos]
        # the next turn starts after a pause, or overlaps the end of this one by up to 40 % of it
        if rng.random() < 0.4:
            pos = end - int(rng.uniform(0.05, 0.4) * len(utt))
        else:
            pos = end + int(rng.uniform(0.2, 1.0) * rate)
        who, k = 1 - who, k + (who == 1)
    active = np.abs(tracks) > 1e-4
    overlap = float((active[0] & active[1]).sum() / max((active[0] | active[1]).sum(), 1))
    if overlap > max_overlap:
        raise RuntimeError(f"the synthetic conversation overlaps {overlap:.2f} > {max_overlap}")
    return tracks.sum(0), overlap


def write_conversation(minutes: float, folder: str, rate: int = 8000) -> tuple:
    """Writes the conversation of ``minutes`` to a float WAV in ``folder``; returns (path, overlap share)."""
    import soundfile as sf

    mix, overlap = conversation(minutes, rate)
    path = os.path.join(folder, f"conversation_{minutes:g}min.wav")
    sf.write(path, mix, rate, subtype="FLOAT")
    return path, overlap


def run_one(model: str, path: str, mode: str, threads: int) -> dict:
    """In this process: separate the recording ``path`` in ``mode``, as the CLI does; returns its measurements."""
    import torch

    from speechbrain_dsn.inference import DSNSeparation
    from speechbrain_dsn.separate import separate_one

    torch.set_num_threads(threads)
    separator = DSNSeparation.from_hparams(source=model, savedir=tempfile.mkdtemp(prefix="dsn_long_"))
    separator.level_costs()  # traced up front, outside the timed separation
    with tempfile.TemporaryDirectory() as out:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        duration, average, gmacs, _ = separate_one(separator, path, out, MODES[mode], None, plot=False)
        elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(
        seconds=round(elapsed, 2),
        rtf=round(elapsed / duration, 4),
        peak_rss_mib=round(peak, 1),
        baseline_rss_mib=round(baseline, 1),
        average_utilization=round(average, 3),
        gmacs=round(gmacs, 3),
    )


def targets_of(rows: list) -> dict:
    """The issue's targets from the measured rows (memory: 10 min against 1 min, and longest against shortest)."""
    by = {(r["minutes"], r["mode"]): r for r in rows}
    minutes = sorted({r["minutes"] for r in rows})
    targets = {}
    pairs = [(1.0, 10.0)] if {1.0, 10.0} <= set(minutes) else []
    if len(minutes) > 1 and (minutes[0], minutes[-1]) not in pairs:
        pairs.append((minutes[0], minutes[-1]))
    for short, long in pairs:
        ratio = max(by[(long, m)]["peak_rss_mib"] / by[(short, m)]["peak_rss_mib"] for m in MODES)
        targets[f"memory_flat_{long:g}_vs_{short:g}_min"] = dict(
            ratio=round(ratio, 3),
            bound=1.2,
            passed=ratio <= 1.2,
            target=f"{long:g} min peak <= 1.2x the {short:g} min peak",
        )
    peak = max(r["peak_rss_mib"] for r in rows)
    targets["memory_under_2gib"] = dict(peak_mib=peak, passed=peak < 2048)
    low = max(by[(m, "U=0.125")]["rtf"] for m in minutes)
    targets["rtf_low"] = dict(rtf=low, bound=0.08, passed=low <= 0.08, target="RTF at U=0.125 <= 0.08")
    gating = max(by[(m, "internal")]["rtf"] / by[(m, "U=1.0")]["rtf"] for m in minutes)
    targets["gating_vs_full"] = dict(
        ratio=round(gating, 3),
        bound=0.5,
        passed=gating <= 0.5,
        target="internal-gating RTF <= 0.5x the RTF at U=1.0 (<= 20 % overlap)",
    )
    return targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "pretrained" / "dsn_small"))
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the JSON here")
    parser.add_argument("--child", nargs=2, metavar=("WAV", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.model, args.child[0], args.child[1], args.threads)))
        return None
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for minutes in args.minutes:
            # written by this process: the measured processes only read and separate it
            path, overlap = write_conversation(minutes, folder)
            for mode in MODES:
                cmd = [
                    sys.executable,
                    __file__,
                    "--model",
                    args.model,
                    "--threads",
                    str(args.threads),
                    "--child",
                    path,
                    mode,
                ]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{minutes} min {mode} failed:\n{done.stderr[-2000:]}")
                row = dict(minutes=minutes, mode=mode, overlap_share=round(overlap, 3))
                rows.append({**row, **json.loads(done.stdout.strip().splitlines()[-1])})
                print(json.dumps(rows[-1]), file=sys.stderr)
            os.remove(path)
    targets = targets_of(rows)
    import torch

    result = dict(
        machine=dict(torch=torch.__version__, threads=args.threads, cpu=platform.processor() or "cpu"),
        model=args.model,
        window_seconds=None,
        rows=rows,
        targets=targets,
    )
    from speechbrain_dsn.inference import DSNSeparation

    result["window_seconds"] = [DSNSeparation.window_seconds, DSNSeparation.overlap_seconds]
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text)
    return result


if __name__ == "__main__":
    main()
