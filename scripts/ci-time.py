#!/usr/bin/env python3
"""Where CI's time goes: reads each preset's build/<preset>/.ninja_log (compile jobs) and
Testing/Temporary/CTestCostData.txt (test run times) and prints job-seconds per group and the
slowest translation units. Job-seconds are summed over ninja's parallel jobs: on 2 cores the
build's wall time is about half of them (docs/perf.md, "CI time").

  scripts/ci-time.py [build-dir] [--top N]
"""
import argparse
import os
import re

GROUPS = [
    ("CUDA units (nvcc)", re.compile(r"_cuda\.cu\.o$|\.cu\.o$")),
    ("determinism, portable (dispatch)", re.compile(r"determinism/.*test_threads_portable")),
    ("determinism, native", re.compile(r"determinism/.*test_threads\.dir")),
    ("benchmarks", re.compile(r"^bench/")),
    ("examples", re.compile(r"^examples/")),
    ("cross-checks (xcheck)", re.compile(r"xcheck")),
    ("tests", re.compile(r"^tests/")),
]


def ninja_jobs(path):
    """{output: seconds} of the last build recorded in a .ninja_log (v5)."""
    jobs = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            start, end, out = int(parts[0]), int(parts[1]), parts[3]
            jobs[out] = (end - start) / 1000.0
    return jobs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--top", type=int, default=8)
    a = ap.parse_args()
    for preset in sorted(os.listdir(a.build)):
        log = os.path.join(a.build, preset, ".ninja_log")
        if not os.path.isfile(log):
            continue
        jobs = ninja_jobs(log)
        total = sum(jobs.values())
        print(f"## {preset}: {len(jobs)} jobs, {total:.0f} job-s (about {total / 2 / 60:.1f} min on 2 cores)")
        rest = dict(jobs)
        for name, rx in GROUPS:
            hit = {k: v for k, v in rest.items() if rx.search(k)}
            for k in hit:
                del rest[k]
            if hit:
                print(f"  {name:34s} {sum(hit.values()):8.0f} job-s  ({len(hit)} jobs)")
        if rest:
            print(f"  {'other (links, libraries)':34s} {sum(rest.values()):8.0f} job-s  ({len(rest)} jobs)")
        for k, v in sorted(jobs.items(), key=lambda kv: -kv[1])[: a.top]:
            print(f"    {v:7.1f} s  {k}")
        cost = os.path.join(a.build, preset, "Testing", "Temporary", "CTestCostData.txt")
        if os.path.isfile(cost):
            tests = []
            with open(cost) as f:
                for line in f:
                    p = line.split()
                    if len(p) == 3:
                        tests.append((float(p[2]), p[0]))
            print(f"  tests: {len(tests)}, {sum(t for t, _ in tests):.0f} s summed; slowest: "
                  + ", ".join(f"{n} {t:.0f} s" for t, n in sorted(tests, reverse=True)[:3]))


if __name__ == "__main__":
    main()
