#!/usr/bin/env python3
"""A/B of two builds' benchmarks in one session: old, new, old, new.

  python3 bench/ab.py OLD_BUILD NEW_BUILD [--reps 3] [--min-time 0.2] [--filter REGEX] [--out DIR]

Runs every bench/*/bench_* binary present in both build folders (default preset layout), each
twice per side, alternately, with 2 OpenMP threads as bench/perf.py does, and prints a markdown
table: the best of the two medians per side, new/old, and the old build's own spread between its
two rounds (the noise floor a difference must exceed).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess


def medians(path):
    with open(path) as f:
        data = json.load(f)
    return {b["run_name"]: b["real_time"] for b in data["benchmarks"]
            if b.get("run_type") != "aggregate" or b.get("aggregate_name") == "median"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--min-time", default="0.2")
    p.add_argument("--filter", default="")
    p.add_argument("--out", default="/tmp/weft_ab")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="2", OMP_PROC_BIND="spread", OMP_PLACES="threads")
    # OpenBLAS 0.3.21 misdetects Zen 5: its AVX-512 kernels by name, on CPUs with AVX-512 only
    with open("/proc/cpuinfo") as f:
        if " avx512f" in f.read():
            env.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
    env.pop("WEFT_BENCH_SMOKE", None)
    rel = sorted(os.path.relpath(b, a.new) for b in glob.glob(os.path.join(a.new, "bench", "*", "bench_*"))
                 if os.access(b, os.X_OK) and os.path.exists(os.path.join(a.old, os.path.relpath(b, a.new))))
    rows = []
    for r in rel:
        name = os.path.basename(r)
        res = {}
        for rnd in (1, 2):
            for side, build in (("old", a.old), ("new", a.new)):
                out = os.path.join(a.out, f"{name}.{side}.{rnd}.json")
                cmd = [os.path.join(build, r), f"--benchmark_out={out}", "--benchmark_out_format=json",
                       f"--benchmark_repetitions={a.reps}", f"--benchmark_min_time={a.min_time}",
                       "--benchmark_enable_random_interleaving=true", "--benchmark_report_aggregates_only=true"]
                if a.filter:
                    cmd.append(f"--benchmark_filter={a.filter}")
                if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
                    break
                res[(side, rnd)] = medians(out)
        if len(res) != 4:
            continue
        for bm in res[("old", 1)]:
            if all(bm in res[k] for k in res):
                old = min(res[("old", 1)][bm], res[("old", 2)][bm])
                new = min(res[("new", 1)][bm], res[("new", 2)][bm])
                spread = max(res[("old", 1)][bm], res[("old", 2)][bm]) / old - 1
                rows.append((name, bm, old, new, spread))
    print("| binary | benchmark | old | new | new/old time | old-vs-old spread |\n|---|---|---:|---:|---:|---:|")
    for name, bm, old, new, spread in rows:
        print(f"| {name} | `{bm}` | {old:.4g} | {new:.4g} | {new / old:.3f} | {spread:.1%} |")
    if rows:
        ratios = [new / old for _, _, old, new, _ in rows]
        print(f"\n{len(rows)} benchmarks: geometric mean new/old {statistics.geometric_mean(ratios):.3f}, "
              f"median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
