#!/usr/bin/env python3
"""Kill a tiny training run with SIGKILL at random moments, resume it, and compare with an uninterrupted run.

    python scripts/kill_resume.py --kills 6 --out /tmp/kill_resume

Runs ``train.py hparams/dsn_2level.yaml`` (tiny model, demo corpus, intra-epoch
checkpoints every ``--interval`` steps) once without interruption, then
again in another folder, sending SIGKILL from outside and rerunning the same
command, ``--kills`` times, then to the end.  Three kills in four come 0-0.5 s
after a random training step (in a step, in a checkpoint save or deletion, in
validation); every fourth after a random fraction of the uninterrupted run's
time (also in start-up, data preparation, the test stage or the export).
Prints one JSON line:

* ``kills``: for each, when it came, whether it hit a checkpoint save or
  deletion (a hidden ``.tmp-``/``.del-`` folder was left), and the steps the
  rerun redid (``redone``: run before the kill and again after it; at most
  ``--interval``);
* ``same_steps``: every step of the killed run (first and redone runs alike)
  has the loss and gating of the uninterrupted run;
* ``same_train_log``, ``same_test_results``, ``same_inference``: the train
  log (each epoch once), ``test_results.csv`` and the exported weights equal
  those of the uninterrupted run.

The quick version of this check is ``tests/test_resume.py``.
"""

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"N_encoder_out": 32, "num_layers": 1, "nhead": 4, "d_ffn": 64, "num_dual_blocks": 1, "chunk_size": 20}


def command(out, args):
    options = {
        **TINY,
        "number_of_epochs": args.epochs,
        "num_train": args.steps,
        "num_valid": 1,
        "num_test": 1,
        "test_overlaps": "[1.0]",
        "test_conditions": "[ov100]",
        "batch_size": 1,
        "training_signal_len": 8000,
        "ckpt_interval_minutes": 0,
        "ckpt_interval_steps": args.interval,
        "gmacs_seconds": 0.25,
        "n_plots": 0,
        "save_audio": False,
        "step_log": os.path.join(out, "steps.csv"),
        "output_folder": out,
        "seed": args.seed,
    }
    cmd = [sys.executable, "train.py", "hparams/dsn_2level.yaml"]
    for key, value in options.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def steps(out):
    """(epoch, step, loss, gating) of every line of the step log ([] before the first)."""
    if not os.path.exists(os.path.join(out, "steps.csv")):
        return []
    with open(os.path.join(out, "steps.csv")) as fin:
        return [
            (r["epoch"], r["step"], r["loss"], r["gating"]) for r in csv.DictReader(fin) if r.get("gating")
        ]  # a line being written when the process was killed is incomplete


def read(path):
    with open(path, "rb") as fin:
        return fin.read()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/kill_resume")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="training pairs = steps per epoch (batch 1)")
    parser.add_argument("--interval", type=int, default=3, help="intra-epoch checkpoint every N steps")
    parser.add_argument(
        "--min_delay",
        type=float,
        default=0.2,
        help="delay before a kill, at least, as a fraction of the uninterrupted run's time",
    )
    parser.add_argument("--max_delay", type=float, default=0.8, help="the same, at most")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shutil.rmtree(args.out, ignore_errors=True)
    reference, killed = os.path.join(args.out, "reference"), os.path.join(args.out, "killed")

    start = time.monotonic()
    subprocess.run(command(reference, args), cwd=ROOT, env=env, check=True, capture_output=True)
    duration = time.monotonic() - start
    rng = random.Random(args.seed)
    kills, finished = [], False
    total = args.epochs * args.steps
    while len(kills) < args.kills:
        logged = len(steps(killed))
        proc = subprocess.Popen(
            command(killed, args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        start = time.monotonic()
        remaining = total - len({(e, s) for e, s, _, _ in steps(killed)})
        if len(kills) % 4 == 3 or remaining < 2:  # at any moment: start-up, preparation, test stage...
            kind, deadline, target = "anytime", start + rng.uniform(args.min_delay, args.max_delay) * duration, None
        else:  # a random time after a random training step, often inside a checkpoint save
            kind, deadline, target = "training", None, rng.randint(1, min(args.steps, remaining - 1))
        while proc.poll() is None:
            if target is not None and len(steps(killed)) - logged >= target:
                deadline, target = time.monotonic() + rng.uniform(0.0, 0.5), None
            if deadline is not None and time.monotonic() >= deadline:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        if proc.wait() == 0:
            finished = True  # the run ended before the kill
            break
        logged = len(steps(killed))
        save = os.path.join(killed, "save")
        hidden = [p for p in os.listdir(save) if p.startswith(".")] if os.path.isdir(save) else []
        kills.append(
            {
                "kind": kind,
                "after_s": round(time.monotonic() - start, 2),
                "steps_logged": logged,
                "in_checkpoint_save_or_delete": bool(hidden),
            }
        )
    if not finished:
        subprocess.run(command(killed, args), cwd=ROOT, env=env, check=True, capture_output=True)

    ref_steps, run_steps = steps(reference), steps(killed)
    expected = {(e, s): (loss, g) for e, s, loss, g in ref_steps}
    seen, redone = {}, []
    for e, s, loss, g in run_steps:
        if (e, s) in seen:
            redone.append((int(e), int(s)))
        seen[(e, s)] = (loss, g)
    same_steps = all(expected.get((e, s)) == (loss, g) for e, s, loss, g in run_steps) and set(seen) == set(expected)
    # steps the rerun after each kill redid: the rows after the kill that repeat earlier ones
    keys = [(e, s) for e, s, _, _ in run_steps]
    for i, kill in enumerate(kills):
        start, n = kill["steps_logged"], 0
        end = kills[i + 1]["steps_logged"] if i + 1 < len(kills) else len(keys)  # this rerun's lines
        while start + n < end and keys[start + n] in keys[:start]:
            n += 1
        kill["redone"] = n
    inference = all(
        torch.equal(a, b)
        for name in ("encoder", "masknet", "decoder")
        for a, b in zip(
            torch.load(os.path.join(reference, "inference", f"{name}.ckpt")).values(),
            torch.load(os.path.join(killed, "inference", f"{name}.ckpt")).values(),
        )
    )
    result = {
        "reference_s": round(duration, 1),
        "kills": kills,
        "finished_before_last_kill": finished,
        "redone_steps_total": len(redone),
        "max_redone_per_kill": max([k["redone"] for k in kills] or [0]),
        "interval": args.interval,
        "same_steps": same_steps,
        "same_train_log": read(os.path.join(reference, "train_log.txt")) == read(os.path.join(killed, "train_log.txt")),
        "same_test_results": read(os.path.join(reference, "test_results.csv"))
        == read(os.path.join(killed, "test_results.csv")),
        "same_inference": inference,
        "leftovers": sorted(p for p in os.listdir(os.path.join(killed, "save")) if p.startswith(".")),
    }
    print(json.dumps(result))
    ok = (
        same_steps
        and result["same_train_log"]
        and result["same_test_results"]
        and inference
        and result["max_redone_per_kill"] <= args.interval
        and not result["leftovers"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
