"""Smoke test of benchmarks/speed.py: it runs and reports every quantity (no timing checks)."""

import json
import pathlib
import statistics
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def test_speed_benchmark_reports_all_quantities(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--tiny", "--threads", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert {
        "machine",
        "setup",
        "seconds_median",
        "seconds_all",
        "gmacs_per_second",
        "peak_memory_mb",
        "targets",
    } <= set(result)
    assert {"torch", "threads", "cpu", "device", "device_name"} <= set(result["machine"])
    configs = ["U=0.125", "U=0.25", "U=0.5", "U=0.75", "U=1.0", "dynamic", "gating", "stock"]
    for name in configs:
        for part in ("masker", "separator"):
            assert result["seconds_median"][f"{part} {name}"] > 0
        assert result["peak_memory_mb"][f"separator {name}"] > 0
        assert result["gmacs_per_second"][name] > 0
    for name in ("train DSN gating", "train static U=1.0", "train stock"):
        assert result["seconds_median"][name] > 0
    # traced MACs grow with the width, and the dynamic track sits between its two levels
    gmacs = result["gmacs_per_second"]
    assert gmacs["U=0.125"] < gmacs["U=0.5"] < gmacs["U=1.0"]
    assert gmacs["U=0.125"] < gmacs["dynamic"] < gmacs["U=1.0"]
    assert abs(gmacs["dynamic"] - gmacs["dynamic (closed form)"]) < 0.1 * gmacs["dynamic"]
    for key in ("a_low_vs_full_masker", "b_full_vs_stock_masker", "c_dynamic_vs_fixed_mean", "d_train_vs_stock"):
        target = result["targets"][key]
        assert target["ratio"] > 0 and isinstance(target["passed"], bool)


def _load_speed_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_ratios_pair_the_jobs_of_each_round():
    speed = _load_speed_module()
    # Within every round U=0.125 is 5.5x faster than U=1.0.  The machine
    # slows down 3x during round 3, after its U=0.125 job: the median of
    # U=1.0 then comes from the slow phase and that of U=0.125 from the fast
    # one, and their ratio (1 / 16.5) misreads the speed-up.
    names = [
        "masker U=lowest",
        "masker U=1.0",
        "masker stock",
        "masker dynamic",
        "masker fixed mean",
        "separator U=lowest",
        "separator U=1.0",
        "separator stock",
        "separator dynamic",
        "separator fixed mean",
        "train DSN gating",
        "train static U=1.0",
        "train stock",
    ]
    raw = {name: [1.0] * 5 for name in names}
    raw["masker U=lowest"] = [1.0, 1.0, 1.0, 3.0, 3.0]
    raw["masker U=1.0"] = [5.5, 5.5, 16.5, 16.5, 16.5]
    times = {name: statistics.median(values) for name, values in raw.items()}
    ratios = speed.target_ratios(times, raw)
    a = ratios["a_low_vs_full_masker"]
    assert a["ratio"] == round(1 / 5.5, 4) and a["speedup"] == 5.5 and a["passed"]
    assert a["ratio_of_medians"] == round(1 / 16.5, 4)
    assert a["per_round"] == {"min": round(1 / 16.5, 4), "max": round(1 / 5.5, 4)}
    # a job 20 % slower than its reference in every round fails the 1.15 bound
    assert ratios["c_dynamic_vs_fixed_mean"]["passed"]
    raw["masker dynamic"] = [1.2] * 5
    assert not speed.target_ratios(times, raw)["c_dynamic_vs_fixed_mean"]["passed"]


BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script, *args, timeout=600):
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_long_audio_benchmark_reports_memory_rtf_and_targets():
    result = _run("long_audio.py", "--minutes", "0.1", "0.3", "--threads", "1")
    assert {(r["minutes"], r["mode"]) for r in result["rows"]} == {
        (m, mode) for m in (0.1, 0.3) for mode in ("U=0.125", "U=1.0", "internal")
    }
    for row in result["rows"]:
        assert row["rtf"] > 0 and row["peak_rss_mib"] >= row["baseline_rss_mib"] > 0
        assert 0 <= row["overlap_share"] <= 0.2
    assert {"memory_flat_0.3_vs_0.1_min", "memory_under_2gib", "rtf_low", "gating_vs_full"} <= set(result["targets"])


def test_budget_benchmark_tracks_the_request():
    result = _run("budget.py", "--num_test", "1", "--budgets", "0.3", "0.7", "--threads", "1")
    assert result["mixtures"] == 4
    for budget in ("0.3", "0.7"):
        assert result["budgets"][budget]["abs_error_max"] < 0.02
    assert {"internal", "U=0.125", "U=1"} <= set(result["modes"])


def test_export_benchmark_times_onnxruntime_and_eager():
    result = _run("export_speed.py", "--repeats", "1", "--seconds", "1", "--threads", "1")
    assert [r["utilization"] for r in result["rows"]] == [0.125, 1.0]
    for row in result["rows"]:
        assert row["onnxruntime_s"] > 0 and row["torch_dsn_external_s"] > 0 and row["max_abs_diff"] < 1e-3
