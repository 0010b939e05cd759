#!/usr/bin/env python3
"""weft_torch's operators beside what a CPU PyTorch user has today, in one process.

  python3 bench/python/bench_torch_ops.py [--T 8192] [--reps 3] [--out FILE.json]

Peers (the issue's yardsticks): FLA's pure-torch references for the same op (fla-core's
`naive_*`; FLA's Triton kernels do not run on a CPU), and for the decode step the raw C++ call
of weft::linear_attention_step on the same tensors (torch.ops.weft._time_raw_step), so the
difference is what the PyTorch binding costs. Shapes: B = 1, H = 8, K = V = 128, fp32,
torch.get_num_threads() threads for both sides. Each figure: the median of --reps timed calls
after one warm-up. Writes JSON with every figure and prints a markdown table.
"""
import argparse
import json
import statistics
import time
import warnings


def timed(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=8192)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-backward", action="store_true", help="skip forward + backward (the peers' autograd is slow)")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import torch.nn.functional as F

    import weft_torch as wt

    try:
        from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule
        from fla.ops.gla.naive import naive_recurrent_gla
        have_fla = True
    except ImportError:
        have_fla = False

    torch.manual_seed(0)
    B, T, H, K, V = 1, a.T, a.H, a.D, a.D
    q = torch.randn(B, T, H, K)
    k = F.normalize(torch.randn(B, T, H, K), dim=-1)
    v = torch.randn(B, T, H, V)
    gk = F.logsigmoid(torch.randn(B, T, H, K) + 2)
    g = F.logsigmoid(torch.randn(B, T, H) + 2)
    beta = torch.rand(B, T, H)
    flop = 2 * T * H * (64 * K + 64 * V + 2 * K * V)  # the chunk form's count at C = 64 (perf.md's)
    rows = []

    def row(name, weft_s, peer_name, peer_s):
        r = dict(name=name, weft_ms=weft_s * 1e3, gflops=flop / weft_s / 1e9, peer=peer_name,
                 peer_ms=None if peer_s is None else peer_s * 1e3,
                 speedup=None if peer_s is None else peer_s / weft_s)
        rows.append(r)
        print(json.dumps(r), flush=True)

    def fwd_bwd(fn, *inputs):
        xs = [x.detach().clone().requires_grad_() for x in inputs]
        out = fn(*xs)[0]
        out.backward(torch.ones_like(out))

    # forward
    w = timed(lambda: wt.chunk_gla(q, k, v, gk), a.reps)
    p = timed(lambda: naive_recurrent_gla(q, k, v, gk), 1) if have_fla else None
    row("GLA chunk forward", w, "fla naive_recurrent_gla", p)
    w = timed(lambda: wt.chunk_gated_delta_rule(q, k, v, g, beta), a.reps)
    p = timed(lambda: naive_chunk_gated_delta_rule(q, k, v, g, beta), a.reps) if have_fla else None
    row("gated DeltaNet chunk forward", w, "fla naive_chunk_gated_delta_rule", p)
    w = timed(lambda: wt.chunk_simple_gla(q, k, v, g), a.reps)
    row("simple GLA chunk forward", w, None, None)
    # forward + backward
    if not a.no_backward:
        w = timed(lambda: fwd_bwd(lambda *x: wt.chunk_gla(*x), q, k, v, gk), a.reps)
        p = timed(lambda: fwd_bwd(lambda *x: naive_recurrent_gla(*x), q, k, v, gk), 1) if have_fla else None
        row("GLA chunk forward + backward", w, "fla naive_recurrent_gla + autograd", p)
        w = timed(lambda: fwd_bwd(lambda *x: wt.chunk_gated_delta_rule(*x), q, k, v, g, beta), a.reps)
        p = (timed(lambda: fwd_bwd(lambda *x: naive_chunk_gated_delta_rule(*x), q, k, v, g, beta), 1)
             if have_fla else None)
        row("gated DeltaNet chunk forward + backward", w, "fla naive_chunk_gated_delta_rule + autograd", p)

    # decode-step call overhead: B = 1, one token
    qs, ks, vs, gs = q[:, :1].contiguous(), k[:, :1].contiguous(), v[:, :1].contiguous(), g[:, :1].contiguous()
    state = torch.zeros(1, H, K, V)
    n = 2000
    raw = torch.ops.weft._time_raw_step(qs, ks, vs, "scalar", gs, None, state, n)
    op = torch.ops.weft.linear_attention_step

    def steps():
        for _ in range(n):
            op(qs, ks, vs, "scalar", gs, None, None, None, state, None, None, None, False)

    via_op = timed(steps, 3) / n

    def steps_py():
        for _ in range(n):
            wt.linear_attention_step("simple_gla", qs, ks, vs, state, g=gs)

    via_py = timed(steps_py, 3) / n
    dec = dict(name="decode step (B=1, simple GLA)", raw_us=raw * 1e6, torch_ops_us=via_op * 1e6,
               python_wrapper_us=via_py * 1e6, overhead_ops_us=(via_op - raw) * 1e6,
               overhead_python_us=(via_py - raw) * 1e6)
    print(json.dumps(dec), flush=True)

    # the machine's practical fp32 ceiling in this process: torch's own GEMM at 2048^3
    m = torch.randn(2048, 2048)
    sgemm = 2 * 2048**3 / timed(lambda: m @ m, 5) / 1e9
    print(json.dumps(dict(name="torch sgemm 2048^3", gflops=sgemm)), flush=True)

    meta = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), torch=torch.__version__, sgemm_gflops=sgemm,
                threads=torch.get_num_threads(), weft_threads=wt.num_threads(), shape=dict(B=B, T=T, H=H, K=K, V=V))
    print(f"\n{meta['date']}, torch {meta['torch']}, {meta['threads']} threads, B={B} T={T} H={H} K=V={K}, fp32\n")
    print(f"torch sgemm 2048^3 in this process: {sgemm:.1f} GFLOP/s\n")
    print("| op | weft ms | GFLOP/s (of torch sgemm) | peer | peer ms | weft speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        pm = "-" if r["peer_ms"] is None else f"{r['peer_ms']:.0f}"
        sp = "-" if r["speedup"] is None else f"**{r['speedup']:.1f}x**"
        print(f"| {r['name']} | {r['weft_ms']:.1f} | {r['gflops']:.1f} ({r['gflops'] / sgemm:.0%}) | "
              f"{r['peer'] or '-'} | {pm} | {sp} |")
    print(f"\n| decode step | raw C++ call | torch.ops.weft | python wrapper |\n|---|---|---|---|\n"
          f"| µs per call | {dec['raw_us']:.1f} | {dec['torch_ops_us']:.1f} (+{dec['overhead_ops_us']:.1f}) | "
          f"{dec['python_wrapper_us']:.1f} (+{dec['overhead_python_us']:.1f}) |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows, decode=dec), f, indent=1)


if __name__ == "__main__":
    main()
