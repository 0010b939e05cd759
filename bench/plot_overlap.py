#!/usr/bin/env python3
"""Plots of the overlap helpers for docs/overlap.md and docs/perf.md.

  WEFT_OVERLAP_TIMELINE=bench/results/overlap_timeline.json build/default/bench/overlap/bench_overlap
  python3 bench/plot_overlap.py [--results bench/results/overlap.json]
                                [--timeline bench/results/overlap_timeline.json] [--out docs/perf]

overlap_timeline.png: each helper's measured schedule on rank 0 over a simulated link as slow as
the compute (4 chunks): compute intervals, transfers in flight (post -> seen complete) and the
waits where communication was exposed. overlap_chunks.png: time per call against the number of
chunks (all_gather_matmul, matmul_reduce_scatter over the link), beside communicate-then-compute
and max(compute, communication), from the benchmark results.
"""
import argparse
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def timeline(path, out):
    with open(path) as f:
        data = json.load(f)
    helpers = list(data.keys())
    fig, axes = plt.subplots(len(helpers), 1, figsize=(10, 2.2 * len(helpers)))
    colors = {"compute": "tab:blue", "transfer": "tab:orange", "wait": "tab:red"}
    rows = {"compute": 2, "transfer": 1, "wait": 0}
    for ax, name in zip(axes, helpers):
        for ev in data[name]:
            ax.broken_barh([(ev["t0"] * 1e3, max(ev["t1"] - ev["t0"], 1e-6) * 1e3)], (rows[ev["kind"]] - 0.4, 0.8),
                           facecolors=colors[ev["kind"]], edgecolors="black", linewidth=0.3)
        ax.set_yticks([0, 1, 2], ["waits (exposed)", "transfers in flight", "compute"])
        ax.set_title(f"{name} (rank 0, simulated link as slow as the compute)", fontsize=9)
        ax.set_xlabel("ms from the call's start")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overlap_timeline.png"), dpi=110)
    print("wrote", os.path.join(out, "overlap_timeline.png"))


def chunks(path, out):
    with open(path) as f:
        data = json.load(f)
    med = {}
    for bm in data["benchmarks"]:
        if bm.get("aggregate_name", "median") != "median":
            continue
        med[bm["run_name"]] = bm
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, helper in zip(axes, ["all_gather_matmul", "matmul_reduce_scatter"]):
        pts = []
        for name, bm in med.items():
            m = re.match(rf"link/{helper}/overlapped/chunks:(\d+)/", name)
            if m:
                pts.append((int(m.group(1)), bm["real_time"]))
        pts.sort()
        serial = [bm for n, bm in med.items() if n.startswith(f"link/{helper}/serial")]
        if not pts or not serial:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="overlapped")
        ax.axhline(serial[0]["real_time"], color="tab:red", ls="--", label="communicate, then compute")
        bound = max(serial[0]["compute_s"], serial[0]["comm_model_s"]) * 1e3
        ax.axhline(bound, color="tab:green", ls=":", label="max(compute, communication)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("chunks per shard")
        ax.set_ylabel("ms per call (slowest rank)")
        ax.set_title(helper, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overlap_chunks.png"), dpi=110)
    print("wrote", os.path.join(out, "overlap_chunks.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="bench/results/overlap.json")
    ap.add_argument("--timeline", default="bench/results/overlap_timeline.json")
    ap.add_argument("--out", default="docs/perf")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if os.path.exists(a.timeline):
        timeline(a.timeline, a.out)
    if os.path.exists(a.results):
        chunks(a.results, a.out)


if __name__ == "__main__":
    main()
