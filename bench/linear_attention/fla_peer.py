#!/usr/bin/env python3
"""The GPU peers of bench_cuda's la/ benchmarks: FLA's and mlstm_kernels' Triton kernels,
timed on the same shapes, so that their figures sit beside weft's from the same session.

  python3 bench/linear_attention/fla_peer.py [--out FILE.json] [--reps 20]

Shapes from WEFT_LA_B, WEFT_LA_T, WEFT_LA_H, WEFT_LA_K, WEFT_LA_V (defaults 8, 8192, 8,
128, 128: bench_cuda's), fp32 inputs [B, T, H, *] (FLA's layout; mlstm_kernels takes
[B, H, T, *]), chunk sizes as the peers choose them. Each kernel: one warm-up call (Triton
compiles it), then --reps calls timed with CUDA events; the median is reported in ms and in
GFLOP/s counting the chunk form's 2 T H (C K + C V + 2 K V) at C = 64, bench_cuda's count.

Peers: fla.ops.linear_attn.chunk_linear_attn (none, normalize=False), fla.ops.simple_gla.
chunk_simple_gla (scalar), fla.ops.gla.chunk_gla (vector), fla.ops.delta_rule.chunk_delta_rule,
fla.ops.gated_delta_rule.chunk_gated_delta_rule, and mlstm_kernels' TFLA kernel
mlstm_chunkwise__xl_chunk (mLSTM, exponential input gate). Exit 77 without torch, CUDA or FLA.
"""
import argparse
import json
import os
import sys
import warnings


def env(name, dflt):
    return int(os.environ.get(name, dflt))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F

        warnings.filterwarnings("ignore")
        from fla.ops.delta_rule import chunk_delta_rule
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        from fla.ops.gla import chunk_gla
        from fla.ops.linear_attn import chunk_linear_attn
        from fla.ops.simple_gla import chunk_simple_gla
    except ImportError as e:
        print(f"skipped: {e} (pip install torch fla-core)")
        return 77
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 77
    try:
        from mlstm_kernels.torch.chunkwise import mlstm_chunkwise__xl_chunk
    except ImportError:
        mlstm_chunkwise__xl_chunk = None

    B, T, H, K, V = (env("WEFT_LA_B", 8), env("WEFT_LA_T", 8192), env("WEFT_LA_H", 8), env("WEFT_LA_K", 128),
                     env("WEFT_LA_V", 128))
    dev = "cuda"
    torch.set_grad_enabled(False)  # forward only, as weft's
    torch.manual_seed(0)
    q = torch.rand(B, T, H, K, device=dev) * 2 - 1
    k = (torch.rand(B, T, H, K, device=dev) * 2 - 1) * (10.0 / K)  # bench_cuda's ranges
    v = torch.rand(B, T, H, V, device=dev) * 2 - 1
    g = -0.001 - 0.099 * torch.rand(B, T, H, device=dev)
    gv = -0.001 - 0.099 * torch.rand(B, T, H, K, device=dev)
    beta = torch.rand(B, T, H, device=dev)
    ig = torch.rand(B, T, H, device=dev) * 4 - 2
    fg = torch.rand(B, T, H, device=dev) * 3 + 1
    scale = K ** -0.5

    runs = {  # gate -> (peer, call)
        "none": ("chunk_linear_attn", lambda: chunk_linear_attn(q, k, v, scale=scale, normalize=False)),
        "scalar": ("chunk_simple_gla", lambda: chunk_simple_gla(q, k, v, g=g, scale=scale)),
        "vector": ("chunk_gla", lambda: chunk_gla(q, k, v, g=gv, scale=scale)),
        "delta": ("chunk_delta_rule", lambda: chunk_delta_rule(q, k, v, beta, scale=scale)),
        "gated_delta": ("chunk_gated_delta_rule", lambda: chunk_gated_delta_rule(q, k, v, g, beta, scale=scale)),
    }
    if mlstm_chunkwise__xl_chunk is not None:
        t = lambda a: a.transpose(1, 2).contiguous()  # [B, H, T, *]
        qh, kh, vh, ih, fh = t(q), t(k), t(v), t(ig), t(fg)
        runs["mlstm"] = ("mlstm_chunkwise__xl_chunk (TFLA)",
                         lambda: mlstm_chunkwise__xl_chunk(qh, kh, vh, ih, fh, autocast_kernel_dtype=torch.float32))
    else:
        print("mlstm: mlstm_kernels absent, not timed", file=sys.stderr)

    flops = 2.0 * B * T * H * (64 * K + 64 * V + 2 * K * V)
    results = {"shape": {"B": B, "T": T, "H": H, "K": K, "V": V}, "device": torch.cuda.get_device_name(),
               "torch": torch.__version__, "kernels": {}}
    print(f"# FLA / mlstm_kernels peers on {results['device']}, B={B} T={T} H={H} K={K} V={V}, fp32")
    print("| gate | peer | ms (median) | GFLOP/s |\n|---|---|---:|---:|")
    for name, (peer, fn) in runs.items():
        try:
            fn()
            torch.cuda.synchronize()
            times = []
            for _ in range(args.reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            times.sort()
            ms = times[len(times) // 2]
            results["kernels"][name] = {"peer": peer, "ms": ms, "GFLOP/s": flops / ms * 1e-6}
            print(f"| {name} | {peer} | {ms:.3f} | {flops / ms * 1e-6:.0f} |")
        except Exception as e:  # one failing peer does not hide the others
            results["kernels"][name] = {"peer": peer, "error": str(e)}
            print(f"| {name} | {peer} failed: {e} | | |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
