"""``python -m nnback bench`` runs and prints its table, says what to install for a missing
reference, and benchmarks/report.py turns its JSON into a Markdown table (and a plot)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nnback import bench

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["bench", "--cases", "step-small", "--repeats", "1", "--min-time", "0"]


def test_bench_command_prints_table_with_ratios(tmp_path):
    results = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "nnback", *QUICK, "--backend", "numpy",
                           "--json", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("case"))
    for column in ("implementation", "backend", "time", "GFLOP/s", "nnback ÷ ref"):
        assert column in header
    nnback_row = next(line for line in lines if line.startswith("step-small") and " nnback " in line)
    assert "hand numpy" in nnback_row and "numpy" in nnback_row and "float64" in nnback_row
    data = json.loads(results.read_text())
    rows = {row["implementation"]: row for row in data["results"]}
    assert {"nnback", "hand numpy"} <= set(rows)
    ratio = rows["nnback"]["ratios"]["hand numpy"]
    assert ratio == pytest.approx(rows["nnback"]["min_s"] / rows["hand numpy"]["min_s"])
    assert rows["nnback"]["device"] and rows["nnback"]["tf32"] is False
    assert data["machine"]["cpu_count"] >= 1


def test_missing_reference_package_is_skipped_with_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "optional", lambda module: None)  # as if torch were missing
    printed = []
    results = tmp_path / "bench.json"
    args = bench_args(QUICK[1:] + ["--backend", "numpy", "--json", str(results)])
    assert bench.run(args, out=printed.append) == 0
    text = "\n".join(printed)
    assert "torch reference skipped: not installed (pip install torch" in text
    implementations = {row["implementation"] for row in
                       json.loads(results.read_text())["results"]}
    assert implementations == {"nnback", "hand numpy"}


def bench_args(argv):
    import argparse

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def test_unknown_case_is_refused_with_the_valid_names():
    with pytest.raises(SystemExit, match="unknown case 'huge'.*step-medium"):
        bench.run(bench_args(["--cases", "huge"]), out=lambda line: None)


def test_step_flops_count_forward_weight_and_input_gradients():
    # 2-3-1 on 4 rows: x·W is 2·4·(2·3) + 2·4·(3·1) = 72 FLOPs forward, the same again for
    # the weight gradients, and 2·4·(3·1) = 24 for the input gradient of the second layer
    assert bench.step_flops([2, 3, 1], 4) == 72 + 72 + 24


def test_report_turns_bench_json_into_markdown_and_plot(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = [
        {"case": "step-medium", "implementation": name, "backend": "numpy",
         "device": "cpu", "dtype": "float32", "min_s": seconds, "median_s": seconds * 1.1,
         "gflops": 1.0 / seconds}
        for name, seconds in (("nnback", 0.006), ("gemm floor", 0.005), ("torch", 0.008))
    ] + [{"case": "gemm 256x784x512", "implementation": "nnback", "backend": "numpy",
          "device": "cpu", "dtype": "float32", "min_s": 0.001, "median_s": 0.001,
          "gflops": 205.5}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"machine": {}, "results": rows}))
    table_path, plot_path = tmp_path / "table.md", tmp_path / "plot.png"
    assert report.main([str(path), "--markdown", str(table_path), "--plot",
                        str(plot_path)]) == 0
    table = table_path.read_text().splitlines()
    assert table[0].startswith("| case | implementation")
    nnback_line = next(line for line in table if "| step-medium | nnback |" in line)
    assert "gemm floor 1.20" in nnback_line and "torch 0.75" in nnback_line
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not plot_path.exists()
    else:
        assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
