"""Turn benchmark JSON into a Markdown table and a PNG plot (for docs/benchmarks.md).

    python benchmarks/report.py RESULTS.json [--markdown OUT.md] [--plot OUT.png]

RESULTS.json is either pytest-benchmark's (``pytest benchmarks --benchmark-only
--benchmark-json=RESULTS.json``) or ``python -m nnback bench --json RESULTS.json``. The
table has one line per case and implementation: minimum and median time, GFLOP/s, and for
nnback its ratio to every reference of the same case (nnback time / reference time, from
the minima). The plot (needs matplotlib; skipped with a note without it) shows GEMM GFLOP/s
against the batch size, and each step/fit case's times relative to nnback.
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

try:
    from nnback.bench import format_seconds, nnback_ratios
except ImportError:  # run from a checkout without nnback installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from nnback.bench import format_seconds, nnback_ratios


def load_rows(path):
    """Rows of {case, implementation, backend, device, dtype, shapes, min_s, median_s,
    gflops} from either JSON format."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if "results" in data:  # python -m nnback bench --json
        return [dict(row) for row in data["results"]]
    rows = []
    for entry in data.get("benchmarks", []):  # pytest-benchmark
        info = entry.get("extra_info", {})
        stats = entry["stats"]
        rows.append({"case": info.get("case", entry.get("group") or entry["name"]),
                     "implementation": info.get("implementation", entry["name"]),
                     "backend": info.get("backend", "?"), "device": info.get("device", "?"),
                     "dtype": info.get("dtype", "?"), "shapes": info.get("shapes"),
                     "tf32": info.get("tf32"), "min_s": stats["min"],
                     "median_s": stats["median"],
                     "gflops": info.get("gflops", info.get("gflop", 0) / stats["min"])})
    return rows


def with_ratios(rows):
    """The rows, with nnback's ratio to each reference of its (case, backend, dtype)."""
    best = defaultdict(dict)
    for row in rows:
        best[(row["case"], row["backend"], row["dtype"])][row["implementation"]] = row["min_s"]
    for row in rows:
        if row["implementation"] == "nnback":
            row["ratios"] = nnback_ratios(best[(row["case"], row["backend"], row["dtype"])])
    return rows


def markdown(rows):
    lines = ["| case | implementation | backend | dtype | min | median | GFLOP/s | "
             "nnback ÷ reference |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for row in rows:
        ratios = ", ".join(f"{name} {value:.2f}" for name, value in row.get("ratios", {}).items())
        lines.append(f"| {row['case']} | {row['implementation']} | {row['backend']} | "
                     f"{row['dtype']} | {format_seconds(row['min_s'])} | "
                     f"{format_seconds(row['median_s'])} | {row['gflops']:.3g} | {ratios} |")
    return "\n".join(lines)


def plot(rows, path):
    """GEMM GFLOP/s by batch size (one line per n_in x n_out and dtype), and each step or
    fit case's implementations as times relative to nnback. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    gemms = defaultdict(list)
    for row in rows:
        if row["case"].startswith("gemm ") and row["implementation"] == "nnback":
            batch, n_in, n_out = (int(part) for part in row["case"][5:].split("x"))
            gemms[f"{n_in}→{n_out} {row['dtype']}"].append((batch, row["gflops"]))
    groups = [row for row in rows if not row["case"].startswith(("gemm ", "bmm "))]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, points in sorted(gemms.items()):
        points.sort()
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    left.set_xscale("log", base=2)
    left.set_xlabel("batch size (rows of x)")
    left.set_ylabel("GFLOP/s")
    left.set_title("x @ W through the backend's matmul")
    if gemms:
        left.legend(fontsize=8)
    cases = list(dict.fromkeys(row["case"] for row in groups))
    implementations = list(dict.fromkeys(row["implementation"] for row in groups))
    width = 0.8 / max(1, len(implementations))
    for number, implementation in enumerate(implementations):
        heights = []
        for case in cases:
            times = {row["implementation"]: row["min_s"] for row in groups if row["case"] == case}
            value = times.get(implementation)
            heights.append(value / times["nnback"] if value and "nnback" in times else 0)
        right.bar([position + number * width for position in range(len(cases))], heights,
                  width, label=implementation)
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set_xticks([position + width * (len(implementations) - 1) / 2
                      for position in range(len(cases))])
    right.set_xticklabels(cases)
    right.set_yscale("log")
    right.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    right.set_ylabel("time relative to nnback (log scale)")
    right.set_title("training step and fit: below 1 is faster than nnback")
    if implementations:
        right.legend(fontsize=8)
    device = rows[0].get("device", "") if rows else ""
    figure.suptitle(f"nnback benchmarks on {device}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="pytest-benchmark or nnback bench JSON")
    parser.add_argument("--markdown", help="write the table here (default: print it)")
    parser.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    args = parser.parse_args(argv)
    rows = with_ratios(load_rows(args.results))
    table = markdown(rows)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(table + "\n")
    else:
        print(table)
    if args.plot and not plot(rows, args.plot):
        print("no plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
