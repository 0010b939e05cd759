#!/usr/bin/env python3
"""The measured schedules of ring attention, for docs/ring.md.

  WEFT_RING_TIMELINE=bench/results/ring_timeline.json build/default/bench/ring/bench_ring \\
      --benchmark_filter='overlap/(pass_kv|bidirectional)/fwd/4'
  python3 bench/plot_ring.py [--timeline bench/results/ring_timeline.json] [--out docs/perf]

ring_timeline.png: for the zigzag pass_kv and bidirectional forwards on 4 ranks over a simulated
link (one K, V block as slow as one step of compute; bidirectional at half the per-direction
bandwidth), every rank's compute steps (labelled by step), transfers in flight (post -> seen
complete) and the waits where communication was exposed, from the per-step timestamps that
ring_attention records (ring_attention_options::timeline).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KINDS = {0: ("compute", "tab:blue"), 1: ("transfer", "tab:orange"), 2: ("wait", "tab:red")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeline", default="bench/results/ring_timeline.json")
    ap.add_argument("--out", default="docs/perf")
    a = ap.parse_args()
    with open(a.timeline) as f:
        data = json.load(f)
    names = list(data.keys())
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.8 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        ranks = data[name]
        for r, events in enumerate(ranks):
            base = (len(ranks) - 1 - r) * 3
            for ev in events:
                kind, color = KINDS[ev["kind"]]
                row = base + {"compute": 2, "transfer": 1, "wait": 0}[kind]
                width = max(ev["t1"] - ev["t0"], 1e-6) * 1e3
                ax.broken_barh([(ev["t0"] * 1e3, width)], (row - 0.4, 0.8), facecolors=color, edgecolors="black",
                               linewidth=0.3)
                if kind == "compute":
                    ax.text(ev["t0"] * 1e3 + width / 2, row, str(ev["step"]), ha="center", va="center", fontsize=7,
                            color="white")
        ax.set_yticks([(len(ranks) - 1 - r) * 3 + 1 for r in range(len(ranks))], [f"rank {r}" for r in range(len(ranks))])
        ax.set_title(f"zigzag, causal, {name}, {len(ranks)} ranks: compute (blue, step), transfers in flight "
                     "(orange), exposed waits (red)", fontsize=9)
        ax.set_xlabel("ms from the call's start")
    fig.tight_layout()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "ring_timeline.png")
    fig.savefig(path, dpi=110)
    print("wrote", path)


if __name__ == "__main__":
    main()
