"""Budget control on a test set: achieved against requested utilization, and its SI-SDRi (issue 11).

Prepares the test mixtures of the bundled demo corpus (``data/demo``, the
folder corpus with the recipe's split, so the test speakers are unseen by the
bundled model; ``--num_test`` mixtures per overlap condition, sources capped
at ``--max_source_seconds``), then separates each mixture with
``DSNSeparation`` (default model: ``pretrained/dsn_small``)

* with internal gating, at each fixed level, and at each ``--budgets`` value;

and prints JSON: per budget, the mean and largest |achieved - requested|
average utilization and the mean SI-SDRi; per fixed level its SI-SDRi; and,
for each budget B, the fixed-level reference at the same average cost: the
best fixed level whose utilization is <= B, and the straight line between the
two fixed levels around B (time-sharing the two static networks).

Usage: ``python benchmarks/budget.py [--model DIR] [--budgets 0.2 0.3 0.4 0.5 0.6 0.8] [--num_test 10]``
"""

import argparse
import csv
import json
import pathlib
import sys
import tempfile

import soundfile as sf
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechbrain_dsn.data.prepare import prepare_dsn_data  # noqa: E402
from speechbrain_dsn.inference import DSNSeparation  # noqa: E402
from speechbrain_dsn.metrics import si_sdr_improvement  # noqa: E402


def _mixtures(save: pathlib.Path, num_spks: int):
    for path in sorted(save.glob("test_ov*.csv")):
        with open(path) as fin:
            for row in csv.DictReader(fin):
                mix = torch.from_numpy(sf.read(row["mix_wav"], dtype="float32")[0])
                refs = [torch.from_numpy(sf.read(row[f"s{i + 1}_wav"], dtype="float32")[0]) for i in range(num_spks)]
                yield path.stem, row["ID"], mix, torch.stack(refs, -1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "pretrained" / "dsn_small"))
    parser.add_argument("--data", default=str(ROOT / "data" / "demo"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.8])
    parser.add_argument("--num_test", type=int, default=10)
    parser.add_argument("--max_source_seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    separator = DSNSeparation.from_hparams(source=args.model, savedir=tempfile.mkdtemp(prefix="dsn_budget_"))
    levels = list(separator.levels)
    num_spks = int(separator.hparams.num_spks)
    modes = [("internal", {})] + [(f"U={u:g}", {"utilization": u}) for u in levels]
    modes += [(f"budget={b:g}", {"budget": b}) for b in args.budgets]
    results = {name: {"si_sdri": [], "average": [], "gmacs": []} for name, _ in modes}
    with tempfile.TemporaryDirectory() as save:
        prepare_dsn_data(
            args.data,
            save,
            corpus="folder",
            num_test=args.num_test,
            num_spks=num_spks,
            max_source_seconds=args.max_source_seconds,
            test_noise_activities=(),
        )
        count = 0
        for _, _, mix, refs in _mixtures(pathlib.Path(save), num_spks):
            count += 1
            for name, kwargs in modes:
                with torch.no_grad():
                    est = separator.separate_batch(mix[None], **kwargs)[0, : len(mix)].cpu()
                report = separator.last_report
                results[name]["si_sdri"].append(float(si_sdr_improvement(est, refs, mix)["si_sdri"]))
                results[name]["average"].append(float(report.average[0]))
                results[name]["gmacs"].append(float(report.gmacs[0]))

    def mean(values):
        return round(sum(values) / len(values), 3)

    summary = {name: {k: mean(v) for k, v in r.items()} for name, r in results.items()}
    fixed = {u: summary[f"U={u:g}"]["si_sdri"] for u in levels}
    budgets = {}
    for b in args.budgets:
        r = results[f"budget={b:g}"]
        errors = [abs(a - b) for a in r["average"]]
        below = [u for u in levels if u <= b + 1e-9]
        lo = max(below) if below else None
        hi = min([u for u in levels if u >= b - 1e-9], default=None)
        line = None
        if lo is not None and hi is not None:
            line = fixed[lo] if hi == lo else fixed[lo] + (fixed[hi] - fixed[lo]) * (b - lo) / (hi - lo)
        budgets[f"{b:g}"] = dict(
            requested=b,
            achieved_mean=mean(r["average"]),
            abs_error_mean=round(sum(errors) / len(errors), 4),
            abs_error_max=round(max(errors), 4),
            si_sdri=mean(r["si_sdri"]),
            gmacs=mean(r["gmacs"]),
            best_fixed_level_at_or_below=None if lo is None else {"level": lo, "si_sdri": fixed[lo]},
            fixed_levels_line=None if line is None else round(line, 3),
        )
    out = dict(model=args.model, mixtures=count, levels=levels, modes=summary, budgets=budgets)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text)
    return out


if __name__ == "__main__":
    main()
