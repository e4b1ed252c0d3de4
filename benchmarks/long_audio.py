"""Long recordings: peak memory and real-time factor of windowed separation (issue 11).

For conversations of 1, 10 and 60 minutes (two speakers of the bundled demo
corpus taking turns, with pauses and at most 20 % overlap) it separates the
whole recording the way ``dsn-separate`` does (windows of
``DSNSeparation.window_seconds``, outputs written to WAV files as the windows
finish) at U = 0.125, at U = 1.0 and with internal gating, each run in a fresh
process on ``--threads`` CPU threads, and prints JSON:

* ``peak_rss_mib``: the peak resident memory of that process (``ru_maxrss``),
  and ``baseline_rss_mib`` its resident memory after loading the model and
  the mixture, before separating;
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


def run_one(model: str, minutes: float, mode: str, threads: int) -> dict:
    """In this process: separate a conversation of ``minutes`` in ``mode``; returns its measurements."""
    import torch

    from speechbrain_dsn.inference import DSNSeparation
    from speechbrain_dsn.separate import separate_one

    torch.set_num_threads(threads)
    import soundfile as sf

    separator = DSNSeparation.from_hparams(source=model, savedir=tempfile.mkdtemp(prefix="dsn_long_"))
    rate = int(separator.hparams.sample_rate)
    mix, overlap = conversation(minutes, rate)
    with tempfile.TemporaryDirectory() as out:
        path = os.path.join(out, "conversation.wav")
        sf.write(path, mix, rate, subtype="FLOAT")
        del mix
        separator.report_for(torch.full((1, 10), separator.levels[-1]), "external")  # costs traced up front
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        duration, average, gmacs, _ = separate_one(separator, path, out, MODES[mode], None, plot=False)
        elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(
        minutes=minutes,
        mode=mode,
        seconds=round(elapsed, 2),
        rtf=round(elapsed / duration, 4),
        peak_rss_mib=round(peak, 1),
        baseline_rss_mib=round(baseline, 1),
        average_utilization=round(average, 3),
        gmacs=round(gmacs, 3),
        overlap_share=round(overlap, 3),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "pretrained" / "dsn_small"))
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the JSON here")
    parser.add_argument("--child", nargs=2, metavar=("MINUTES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.model, float(args.child[0]), args.child[1], args.threads)))
        return None
    rows = []
    for minutes in args.minutes:
        for mode in MODES:
            cmd = [
                sys.executable,
                __file__,
                "--model",
                args.model,
                "--threads",
                str(args.threads),
                "--child",
                str(minutes),
                mode,
            ]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{minutes} min {mode} failed:\n{done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    by = {(r["minutes"], r["mode"]): r for r in rows}
    targets = {}
    shortest, longest = min(args.minutes), max(args.minutes)
    if len(args.minutes) > 1:
        ratio = max(by[(longest, m)]["peak_rss_mib"] / by[(shortest, m)]["peak_rss_mib"] for m in MODES)
        targets["memory_flat"] = dict(
            ratio=round(ratio, 3),
            bound=1.2,
            passed=ratio <= 1.2,
            target=f"{longest:g} min peak <= 1.2x the {shortest:g} min peak",
        )
    peak = max(r["peak_rss_mib"] for r in rows)
    targets["memory_under_2gib"] = dict(peak_mib=peak, passed=peak < 2048)
    low = max(by[(m, "U=0.125")]["rtf"] for m in args.minutes)
    targets["rtf_low"] = dict(rtf=low, bound=0.08, passed=low <= 0.08, target="RTF at U=0.125 <= 0.08")
    gating = max(by[(m, "internal")]["rtf"] / by[(m, "U=1.0")]["rtf"] for m in args.minutes)
    targets["gating_vs_full"] = dict(
        ratio=round(gating, 3),
        bound=0.5,
        passed=gating <= 0.5,
        target="internal-gating RTF <= 0.5x the RTF at U=1.0 (<= 20 % overlap)",
    )
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
