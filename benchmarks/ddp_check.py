"""Do N torchrun processes train like one process?  Prints a JSON report.

Runs the recipe twice on the demo corpus with a tiny model in debug mode:
``python train.py`` with ``batch_size = B`` and ``torchrun --nproc_per_node=N
train.py`` with ``batch_size = B / N`` (per process), same seed, and compares
the loss of every training step (``step_log``: under DDP the mean over the
processes, i.e. the loss of the global batch).  Step 1 checks that the
processes see the same weights and the same data as the one process; later
steps check the averaged gradients.

Randomness that depends on the number of processes is removed: the gates are
deterministic (``gumbel_noise: False``, straight-through softmax), since Gumbel
noise is drawn per example from each process's global RNG.  The gating-dropout
draw (one per step) stays: every process and the single process draw it from
identically seeded global RNGs in the same order, so it matches as long as
nothing else draws from the global RNG per example.  The training mixtures are
keyed by (seed, epoch, item ID) and the order of the items is the
one-process order split across the processes (train.py), so the data do not
depend on the number of processes either.

    python benchmarks/ddp_check.py                   # 2 processes, gloo, CPU
    python benchmarks/ddp_check.py --nproc 4 --global_batch 4 --backend nccl

Exit status 1 if a step's loss differs by more than the tolerance.
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(
    N_encoder_out=16,
    nhead=2,
    d_ffn=32,
    num_layers=1,
    num_dual_blocks=1,
    chunk_size=10,
    gating_channels=8,
    gating_d_ffn=16,
    training_signal_len=4000,
)


def train(out, data, nproc=None, backend="gloo", yaml="hparams/dsn_3level.yaml", timeout=600, **overrides):
    """Runs ``train.py --debug`` (under torchrun with ``nproc``); returns (step rows, seconds, command)."""
    options = {
        **TINY,
        "output_folder": out,
        "data_save_folder": data,
        "test_conditions": "[ov100, ov25]",
        "gmacs_seconds": 0.25,
        "n_plots": 1,
        "n_audio_to_save": 1,
        "debug_batches": 3,
        "step_log": os.path.join(out, "steps.csv"),
        **overrides,
    }
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        options["distributed_backend"] = backend
    args = launcher + ["train.py", yaml, "--debug"]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "run.log")
    start = time.perf_counter()
    # output to a file: torchrun's workers run in sessions of their own and would
    # keep a pipe open after a timeout
    timed_out = False
    with open(log, "w") as fout:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=fout, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.terminate()  # torchrun stops its workers on SIGTERM
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    seconds = time.perf_counter() - start
    with open(log) as fin:
        tail = fin.read()[-6000:]
    if timed_out:
        raise RuntimeError(f"{' '.join(args)} timed out after {timeout} s:\n{tail}")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{tail}")
    with open(os.path.join(out, "steps.csv")) as fin:
        return list(csv.DictReader(fin)), seconds, args


def compare(one, many, rtol, atol):
    """Step-by-step comparison of two step logs (lists of CSV rows)."""
    keys = [(r["epoch"], r["step"]) for r in one]
    a = [float(r["loss"]) for r in one]
    b = [float(r["loss"]) for r in many]
    abs_diff = [abs(x - y) for x, y in zip(a, b)]
    same_steps = keys == [(r["epoch"], r["step"]) for r in many]
    same_gating = [r["gating"] for r in one] == [r["gating"] for r in many]
    return {
        "num_steps": len(keys),
        "same_steps": same_steps,
        "same_gating": same_gating,
        "max_abs_diff": max(abs_diff, default=0.0),
        "max_rel_diff": max((d / max(abs(x), 1e-12) for d, x in zip(abs_diff, a)), default=0.0),
        "tolerance": {"rtol": rtol, "atol": atol},
        "equal": same_steps
        and same_gating
        and len(a) > 0
        and all(math.isclose(x, y, rel_tol=rtol, abs_tol=atol) for x, y in zip(a, b)),
    }


def summary_rows(out):
    """(condition, gating) pairs of ``test_summary.csv``."""
    with open(os.path.join(out, "test_summary.csv")) as fin:
        return sorted({(r["condition"], r["gating"]) for r in csv.DictReader(fin)})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--global_batch", type=int, default=2)
    parser.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (GPU)")
    parser.add_argument("--debug_batches", type=int, default=4, help="steps per epoch (2 epochs)")
    parser.add_argument("--gating_dropout", type=float, default=0.5)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--folder", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.global_batch % args.nproc:
        parser.error("--global_batch must be a multiple of --nproc")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or tmp
        data = os.path.join(folder, "data")
        common = dict(gumbel_noise=False, gating_dropout=args.gating_dropout, debug_batches=args.debug_batches)
        one, t_one, cmd_one = train(os.path.join(folder, "one"), data, batch_size=args.global_batch, **common)
        many, t_many, cmd_many = train(
            os.path.join(folder, f"nproc{args.nproc}"),
            data,
            nproc=args.nproc,
            backend=args.backend,
            batch_size=args.global_batch // args.nproc,
            **common,
        )
        report = {
            "nproc": args.nproc,
            "global_batch": args.global_batch,
            "commands": {"one": " ".join(cmd_one[1:]), "ddp": "torchrun " + " ".join(cmd_many[3:])},
            "seconds": {"one": round(t_one, 1), "ddp": round(t_many, 1)},
            "steps": [
                {
                    "epoch": int(a["epoch"]),
                    "step": int(a["step"]),
                    "gating": a["gating"],
                    "loss_one": float(a["loss"]),
                    "loss_ddp": float(b["loss"]),
                    "gating_ddp": b["gating"],
                }
                for a, b in zip(one, many)
            ],
            **compare(one, many, args.rtol, args.atol),
            "test_summary_one": summary_rows(os.path.join(folder, "one")),
            "test_summary_ddp": summary_rows(os.path.join(folder, f"nproc{args.nproc}")),
        }
    print(json.dumps(report, indent=1))
    return 0 if report["equal"] and report["test_summary_one"] == report["test_summary_ddp"] else 1


if __name__ == "__main__":
    sys.exit(main())
