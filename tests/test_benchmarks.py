"""Smoke test of benchmarks/speed.py: it runs and reports every quantity (no timing checks)."""

import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def test_speed_benchmark_reports_all_quantities(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--tiny", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, check=True, timeout=300,
    )
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert {"machine", "setup", "seconds_median", "seconds_all", "gmacs_per_second", "peak_memory_mb", "targets"} <= set(result)
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
