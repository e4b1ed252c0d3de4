"""Exported levels: onnxruntime against PyTorch eager, per 4 s input (issue 11).

For each level of a DSN (default: the bundled ``pretrained/dsn_small``; ``--paper``:
the Table I network with random weights and the five Table I levels) it
exports the static sub-network of that level to ONNX
(``speechbrain_dsn.export``), and times, on ``--threads`` CPU threads, the
median over ``--repeats`` runs of one 4 s input through

* onnxruntime (CPU execution provider);
* PyTorch eager: the DSN under external gating at that level
  (``torch.inference_mode``), and the exported static sub-network;

with the largest |onnxruntime - PyTorch| difference, printed as JSON.

Usage: ``python benchmarks/export_speed.py [--model DIR | --paper] [--threads 2] [--repeats 5]``
"""

import argparse
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechbrain_dsn.export import export_onnx, load_model, static_subnetwork  # noqa: E402
from speechbrain_dsn.model import DSNSepformer  # noqa: E402


def _median_seconds(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "pretrained" / "dsn_small"))
    parser.add_argument("--paper", action="store_true", help="the Table I network (random weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args(argv)
    import onnxruntime

    torch.set_num_threads(args.threads)
    if args.paper:
        model, rate = DSNSepformer.paper_config([0.125, 0.25, 0.5, 0.75, 1.0]).eval(), 8000
    else:
        model, rate = load_model(args.model)
    samples = int(args.seconds * rate)
    mix = torch.randn(1, samples)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for u in model.masknet.levels:
            path = f"{folder}/dsn_{u}.onnx"
            diff = export_onnx(model, u, path, samples)
            session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            static = static_subnetwork(model, u).eval()
            feed = {"mix": mix.numpy()}
            with torch.inference_mode():
                onnx_s = _median_seconds(lambda s=session, f=feed: s.run(None, f), args.repeats)
                dsn_s = _median_seconds(lambda u=u: model(mix, utilization=u), args.repeats)
                static_s = _median_seconds(lambda m=static: m(mix), args.repeats)
            rows.append(
                dict(
                    utilization=u,
                    onnxruntime_s=round(onnx_s, 4),
                    torch_dsn_external_s=round(dsn_s, 4),
                    torch_static_s=round(static_s, 4),
                    max_abs_diff=float(f"{diff:.3g}"),
                    onnx_mib=round(pathlib.Path(path).stat().st_size / 2**20, 2),
                )
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = dict(
        machine=dict(
            torch=torch.__version__,
            onnxruntime=onnxruntime.__version__,
            threads=args.threads,
            cpu=platform.processor() or "cpu",
        ),
        model="paper (random weights)" if args.paper else args.model,
        seconds=args.seconds,
        repeats=args.repeats,
        rows=rows,
    )
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text)
    return result


if __name__ == "__main__":
    main()
