#!/usr/bin/env python3
"""Softmax attention forward and backward: weft beside PyTorch's CPU SDPA, in one run.

    python3 bench/attention/torch_peer.py build/default/bench/attention/bench_attention [--T 2048]
    python3 bench/attention/torch_peer.py build/default/bench/attention/bench_attention_bf16 --bf16

Runs weft's benchmark binary (fma_peak, weft_forward, weft_backward; Kokkos OpenMP, 2 threads),
then torch.nn.functional.scaled_dot_product_attention on the same shape (B = 1, H = 8, D = 128,
fp32, causal, torch.set_num_threads(2)), forward and forward + backward, best of 3, and prints
GFLOP/s, the fraction of the FMA peak measured by the binary in the same run, and weft / torch.
FLOPs: forward 4 T(T+1)/2 H D, backward 2.5x that (as the C++ benchmark counts them).
--bf16: the forward only, from bench_attention_bf16 (fp32, and bf16 inputs on each bf16 unit the
CPU has, beside the fp32 FMA, VDPBF16PS and AMX peaks), and torch's forward in fp32 and bf16.
torch is a bench peer, not a dependency: without it the script says so and exits 77 (skipped).
"""
import argparse
import json
import os
import subprocess
import sys
import time


def weft_figures(binary, T):
    env = dict(os.environ, OMP_NUM_THREADS="2", OMP_PROC_BIND="spread", WEFT_ATTN_T=str(T))
    out = subprocess.run([binary, "--benchmark_filter=fma_peak|weft_", "--benchmark_format=json"],
                         env=env, check=True, capture_output=True, text=True).stdout
    rows = {b["name"].split("/")[0]: b for b in json.loads(out)["benchmarks"]}
    return {name: rows[name]["GFLOP/s"] for name in ("fma_peak", "weft_forward", "weft_backward") if name in rows}


def torch_figures(T, H=8, D=128, reps=3):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, H, T, D, generator=g, requires_grad=True) for _ in range(3))
    flops = 4.0 * T * (T + 1) / 2 * H * D
    best_f = best_b = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
        best_f = min(best_f, time.perf_counter() - t0)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        do = torch.ones_like(o)
        t0 = time.perf_counter()
        o.backward(do)
        best_b = min(best_b, time.perf_counter() - t0)
        for x in (q, k, v):
            x.grad = None
    return {"torch_forward": flops / best_f / 1e9, "torch_backward": 2.5 * flops / best_b / 1e9,
            "version": torch.__version__}


def weft_bf16_figures(binary, T):
    env = dict(os.environ, OMP_NUM_THREADS="2", OMP_PROC_BIND="spread", WEFT_ATTN_T=str(T))
    out = subprocess.run([binary, "--benchmark_format=json"], env=env, check=True, capture_output=True,
                         text=True).stdout
    rows = {}
    for b in json.loads(out)["benchmarks"]:
        if "GFLOP/s" in b:
            name = b["name"].split("/real_time")[0]
            rows[name + (" (" + b["label"] + ")" if b.get("label") else "")] = b["GFLOP/s"]
    return rows


def torch_forward(T, dtype, H=8, D=128, reps=4):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, H, T, D, generator=g).to(dtype) for _ in range(3))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
        best = min(best, time.perf_counter() - t0)
    return 4.0 * T * (T + 1) / 2 * H * D / best / 1e9


def main_bf16(binary, T):
    import torch
    w = weft_bf16_figures(binary, T)
    t32, t16 = torch_forward(T, torch.float32), torch_forward(T, torch.bfloat16)
    peak = w["fma_peak"]
    print(f"T = {T}, H = 8, D = 128, causal, forward, 2 threads; torch {torch.__version__}")
    print("| what | GFLOP/s | fraction of the fp32 FMA peak |")
    print("|---|---:|---:|")
    for name, g in w.items():
        print(f"| {name} | {g:.1f} | {g / peak:.2f} |")
    print(f"| torch SDPA fp32 | {t32:.1f} | {t32 / peak:.2f} |")
    print(f"| torch SDPA bf16 | {t16:.1f} | {t16 / peak:.2f} |")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--bf16", action="store_true", help="binary is bench_attention_bf16")
    a = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e} (pip install torch)")
        return 77
    if a.bf16:
        return main_bf16(a.binary, a.T)
    w = weft_figures(a.binary, a.T)
    t = torch_figures(a.T)
    peak = w["fma_peak"]
    print(f"T = {a.T}, H = 8, D = 128, fp32, causal, 2 threads; FMA peak {peak:.0f} GFLOP/s; torch {t['version']}")
    print("| pass | weft GFLOP/s (peak) | torch SDPA GFLOP/s (peak) | weft / torch |")
    print("|---|---:|---:|---:|")
    for p in ("forward", "backward"):
        wf, tf = w[f"weft_{p}"], t[f"torch_{p}"]
        print(f"| {p} | {wf:.1f} ({100 * wf / peak:.1f}%) | {tf:.1f} ({100 * tf / peak:.1f}%) | {wf / tf:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
