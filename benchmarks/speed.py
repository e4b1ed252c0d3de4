"""Wall-clock speed, traced MACs and peak memory of the DSN against stock SepFormer.

Answers GitHub issue 4 ("make dynamic width save wall-clock time, not only
MACs") with numbers: for a 4 s mixture at 8 kHz on the paper configuration
(Table I) it times, under ``torch.inference_mode()``,

* the masker alone (from a precomputed encoded mixture) and the whole
  separator (encoder -> masker -> decoder) at every fixed level of one DSN
  built with the five Table-I levels {0.125, 0.25, 0.5, 0.75, 1.0};
* stock SpeechBrain SepFormer (``SepformerWrapper`` with ``SBTransformerBlock``,
  same configuration);
* a dynamic track: alternating 0.3 s segments of the lowest and the highest
  level, per encoder frame; and internal gating with the (untrained) gating
  module, for reference;
* one training step (forward, backward, Adam; batch 1) of the DSN with
  internal gating (masked path), of a static U=1.0 network and of stock
  SepFormer;

plus the traced GMAC/s of each configuration, the peak memory of each
forward, and the four target ratios of the issue with pass/fail.  Times are
medians over ``--repeats`` interleaved repetitions (the outer loop runs over
repetitions, the inner over configurations), after one warm-up run each, so
that load from other processes hits every configuration alike.  A target's
ratio is the median over the rounds of the ratio within each round (a paired
estimate; the masker jobs it compares run back to back); the ratio of the two
medians is reported next to it.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory
allocated before the call; on CPU the running sum of the allocation and free
events that the torch profiler records (``profile_memory=True``), i.e. the
peak of memory allocated by tensors during the call on top of what existed
before it (parameters and inputs excluded).

Usage: ``python benchmarks/speed.py [--threads 2] [--repeats 5] [--json out.json]``;
``--quick --tiny`` is a smoke run of a few seconds.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

# The CPU peak-memory measurement uses the torch profiler, whose kineto backend
# logs start/stop lines to stderr, between the lines of the table.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import torch  # noqa: E402
from speechbrain.nnet.losses import get_si_snr_with_pitwrapper  # noqa: E402

from speechbrain_dsn.complexity import gmacs_per_second, track_gmacs  # noqa: E402
from speechbrain_dsn.config import DSNConfig  # noqa: E402
from speechbrain_dsn.model import DSNSepformer, stock_sepformer  # noqa: E402

LEVELS = (0.125, 0.25, 0.5, 0.75, 1.0)
#: d_model 32, one layer per block: a configuration for smoke tests.
TINY_CONFIG = {
    **DSNConfig.paper(),
    "N_encoder_out": 32,
    "chunk_size": 10,
    "num_dual_blocks": 1,
    "num_layers": 1,
    "nhead": 4,
    "d_ffn": 64,
}
#: issue 4 targets: name -> (numerator, denominator, bound, description)
TARGETS = {
    "a_low_vs_full_masker": ("masker U=lowest", "masker U=1.0", 1 / 5.0, "U=0.125 >= 5.0x faster than U=1.0"),
    "b_full_vs_stock_masker": ("masker U=1.0", "masker stock", 1.10, "U=1.0 <= 1.10x stock"),
    "c_dynamic_vs_fixed_mean": ("masker dynamic", "masker fixed mean", 1.15, "50/50 track <= 1.15x fixed mean"),
    "d_train_vs_stock": ("train DSN gating", "train stock", 1.3, "DSN training step <= 1.3x stock"),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved_medians(jobs, repeats, device):
    """Median seconds of each job: warm-up once, then ``repeats`` rounds over all jobs."""
    times = {name: [] for name in jobs}
    for fn in jobs.values():
        fn()
    for _ in range(repeats):
        for name, fn in jobs.items():
            times[name].append(_timed(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}, times


def peak_memory_mb(fn, device):
    """Peak tensor memory allocated during ``fn()`` on top of what existed before (MiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if str(event.device_type()).endswith("CPU"):
            current += event.nbytes()
            peak = max(peak, current)
    return peak / 2**20


def build_models(tiny, device):
    """(DSN with the five levels, static U=1.0 DSN, stock SepFormer), in eval mode."""
    # dropout 0.1, as in the stock SepformerWrapper (its training step is timed too)
    config = {**(TINY_CONFIG if tiny else DSNConfig.paper()), "dropout": 0.1}
    dsn = DSNSepformer.from_config({**config, "utilization_levels": list(LEVELS)})
    static = DSNSepformer.from_config({**config, "utilization_levels": [1.0]})
    stock = stock_sepformer(config)
    # Same weights everywhere (the stock keys are a subset of the DSN's).
    stock.load_state_dict(dsn.state_dict(), strict=False)
    static.load_state_dict(stock.state_dict())
    return [m.to(device).eval() for m in (dsn, static, stock)]


def dynamic_track(frames, sample_rate, stride, segment_s=0.3, levels=LEVELS):
    """[1, frames]: alternating ``segment_s`` segments of the lowest and highest level."""
    per_segment = max(1, round(segment_s * sample_rate / stride))
    high = (torch.arange(frames) // per_segment) % 2 == 1
    return torch.where(high, levels[-1], levels[0])[None]


def stock_gmacs(stock, samples, seconds, device):
    from torchprofile import profile_macs

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return profile_macs(stock, (torch.randn(1, samples, device=device),)) / seconds / 1e9


def train_step_fn(model, mix, targets):
    """One forward + backward + Adam step on a fresh optimizer (state built in warm-up)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = get_si_snr_with_pitwrapper(targets, model(mix)).mean()
        loss.backward()
        optimizer.step()

    return step


def target_ratios(times, raw):
    """The issue's four target ratios (pass/fail) and the separator and static-network ratios.

    ``times`` maps each job to its median seconds, ``raw`` to its seconds in
    each round.  A ratio is a paired estimate: the ratio of the two jobs
    within each round (their jobs ran close together, so a slow phase of a
    shared machine hits both), median over the rounds.  The ratio of the two
    medians can pair a fast-phase median with a slow-phase one when the
    machine drifts mid-run; it is reported next to it.
    """

    def per_round(num, den):
        """Sorted ratios of ``num`` to ``den`` within each round."""
        return sorted(a / b for a, b in zip(raw[num], raw[den]))

    ratios = {}
    for key, (num, den, bound, text) in TARGETS.items():
        paired = per_round(num, den)
        ratio = statistics.median(paired)
        ratios[key] = dict(
            ratio=round(ratio, 4),
            bound=round(bound, 4),
            passed=ratio <= bound,
            target=text,
            ratio_of_medians=round(times[num] / times[den], 4),
            per_round=dict(min=round(paired[0], 4), max=round(paired[-1], 4)),
        )
        if key == "a_low_vs_full_masker":
            ratios[key]["speedup"] = round(1 / ratio, 3)
    # the same paired estimate for the whole separator and the static network
    ratios["a_low_vs_full_separator_speedup"] = round(
        1 / statistics.median(per_round("separator U=lowest", "separator U=1.0")), 3
    )
    for key, num, den in (
        ("b_full_vs_stock_separator", "separator U=1.0", "separator stock"),
        ("c_dynamic_vs_fixed_mean_separator", "separator dynamic", "separator fixed mean"),
        ("d_static_train_vs_stock", "train static U=1.0", "train stock"),
    ):
        ratios[key] = round(statistics.median(per_round(num, den)), 4)
    return ratios


def run(args):
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sample_rate = 8000
    seconds = 0.5 if args.quick else args.seconds
    repeats = 1 if args.quick else args.repeats
    samples = int(seconds * sample_rate)
    dsn, static, stock = build_models(args.tiny, device)
    stride = dsn.encoder.conv1d.stride[0]
    mix = torch.randn(1, samples, device=device)
    with torch.inference_mode():
        mix_w = dsn.encoder(mix)
    track = dynamic_track(mix_w.shape[-1], sample_rate, stride).to(device)

    # configuration -> utilization argument of the DSN (None: internal gating)
    dsn_configs = {f"U={u}": u for u in LEVELS}
    dsn_configs["dynamic"] = track
    dsn_configs["gating"] = None
    jobs = {}
    # The masker jobs that targets (a)-(c) compare run back to back in each
    # round, so that their per-round ratios see the same state of the machine.
    for name in (f"U={LEVELS[0]}", f"U={LEVELS[-1]}", "dynamic"):
        jobs[f"masker {name}"] = lambda u=dsn_configs[name]: dsn.masknet(mix_w, utilization=u)
    jobs["masker stock"] = lambda: stock.masknet(mix_w)
    for name, u in dsn_configs.items():
        jobs.setdefault(f"masker {name}", lambda u=u: dsn.masknet(mix_w, utilization=u))
    for name, u in dsn_configs.items():
        jobs[f"separator {name}"] = lambda u=u: dsn(mix, utilization=u)
    jobs["separator stock"] = lambda: stock(mix)
    with torch.inference_mode():
        times, raw = interleaved_medians(jobs, repeats, device)
        dsn.masknet(mix_w)
        gating_levels = dsn.masknet.last_utilization
        memory = {name: peak_memory_mb(fn, device) for name, fn in jobs.items() if name.startswith("separator")}
    for part in ("masker", "separator"):
        low, full = f"{part} U={LEVELS[0]}", f"{part} U={LEVELS[-1]}"
        times[f"{part} U=lowest"], raw[f"{part} U=lowest"] = times[low], raw[low]
        times[f"{part} fixed mean"] = (times[low] + times[full]) / 2
        raw[f"{part} fixed mean"] = [(a + b) / 2 for a, b in zip(raw[low], raw[full])]

    # training steps: DSN with internal gating (masked path), static U=1.0, stock
    targets = torch.randn(1, samples, dsn.config.num_spks, device=device)
    train_jobs = {
        "train DSN gating": train_step_fn(dsn, mix, targets),
        "train static U=1.0": train_step_fn(static, mix, targets),
        "train stock": train_step_fn(stock, mix, targets),
    }
    train_times, train_raw = interleaved_medians(train_jobs, repeats, device)
    times.update(train_times)
    raw.update(train_raw)
    for model in (dsn, static, stock):
        model.eval()

    # traced complexity (GMAC/s of input)
    gmacs = {name: gmacs_per_second(dsn, u, seconds, sample_rate) for name, u in dsn_configs.items()}
    gmacs["stock"] = stock_gmacs(stock, samples, seconds, device)
    level_gmacs = {u: gmacs[f"U={u}"] for u in LEVELS}
    gmacs["dynamic (closed form)"] = track_gmacs(level_gmacs, track)
    gmacs["gating (closed form, excl. gate)"] = track_gmacs(level_gmacs, gating_levels)

    ratios = target_ratios(times, raw)
    return dict(
        machine=machine_info(device, args.threads),
        setup=dict(
            seconds=seconds,
            sample_rate=sample_rate,
            repeats=repeats,
            tiny=args.tiny,
            levels=LEVELS,
            dynamic_track="alternating 0.3 s segments of U=%g and U=%g" % (LEVELS[0], LEVELS[-1]),
            gating_level_shares={
                str(u): round(float((gating_levels - u).abs().lt(1e-4).float().mean()), 3) for u in LEVELS
            },
        ),
        seconds_median={k: round(v, 5) for k, v in times.items()},
        seconds_all={k: [round(x, 5) for x in v] for k, v in raw.items()},
        gmacs_per_second={k: round(v, 3) for k, v in gmacs.items()},
        peak_memory_mb={k: round(v, 2) for k, v in memory.items()},
        targets=ratios,
    )


def machine_info(device, threads):
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fin:
            cpu = next(line.split(":", 1)[1].strip() for line in fin if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return dict(torch=torch.__version__, threads=threads, cpu=cpu, device=str(device), device_name=name)


def print_table(result, file=sys.stderr):
    times, gmacs, memory = result["seconds_median"], result["gmacs_per_second"], result["peak_memory_mb"]
    print(f"{'configuration':<12} {'masker s':>9} {'separator s':>12} {'GMAC/s':>8} {'peak MiB':>9}", file=file)
    for name in [f"U={u}" for u in LEVELS] + ["dynamic", "gating", "stock"]:
        print(
            f"{name:<12} {times[f'masker {name}']:>9.3f} {times[f'separator {name}']:>12.3f} "
            f"{gmacs[name]:>8.2f} {memory[f'separator {name}']:>9.1f}",
            file=file,
        )
    for name in ("train DSN gating", "train static U=1.0", "train stock"):
        print(f"{name:<22} {times[name]:>9.3f} s/step", file=file)
    for key, value in result["targets"].items():
        if isinstance(value, dict):
            verdict = "PASS" if value["passed"] else "FAIL"
            spread = value["per_round"]
            print(
                f"{verdict} {key}: {value['ratio']:.3f} (bound {value['bound']:.3f}; {value['target']}; "
                f"rounds {spread['min']:.3f}-{spread['max']:.3f}; ratio of medians {value['ratio_of_medians']:.3f})",
                file=file,
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="input duration")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 0.5 s input")
    parser.add_argument("--tiny", action="store_true", help="d_model-32 configuration (tests)")
    parser.add_argument("--json", help="also write the JSON to this path")
    args = parser.parse_args(argv)
    result = run(args)
    # JSON on stdout (machine-readable), the table on stderr
    text = json.dumps(result, indent=1)
    print(text)
    print_table(result)
    if args.json:
        with open(args.json, "w") as fout:
            fout.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
