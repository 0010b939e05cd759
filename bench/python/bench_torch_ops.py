#!/usr/bin/env python3
"""weft_torch's operators beside what a CPU PyTorch user has today, in one process.

  python3 bench/python/bench_torch_ops.py [--T 8192] [--reps 3] [--out FILE.json] [--plot FILE.png]
  python3 bench/python/bench_torch_ops.py --from-json bench/results/torch_ops.json --plot docs/perf/torch_ops.png

Peers (the issue's yardsticks): FLA's pure-torch references for the same op (fla-core's
`naive_*`; FLA's Triton kernels do not run on a CPU), torch's CPU SDPA kernel for attention
(causal, its [B,H,T,D] layout prepared outside the timing), mamba_ssm's selective_scan_ref and
causal-conv1d's causal_conv1d_ref (loaded by tests/xcheck/mamba_refs.py; rows without a peer
when those packages are absent), and for the decode step the raw C++ call
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
    ap.add_argument("--plot", default=None, help="PNG: weft's and the peers' times per op (log scale)")
    ap.add_argument("--T-backward", type=int, default=2048,
                    help="T of the forward + backward rows (FLA's token-loop autograd at T = 8192 held 13 GB "
                         "and had not finished after 20 minutes here); 0 skips them")
    ap.add_argument("--mamba-T-backward", type=int, default=512,
                    help="T of the Mamba forward + backward rows (selective_scan_ref's autograd slices a "
                         "[B,D,T,N] tensor per step: its backward grows as T^2 and had not finished at T = 2048 "
                         "after 5 minutes); 0 skips them")
    ap.add_argument("--from-json", default=None, help="only draw --plot from a earlier run's --out file")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            d = json.load(f)
        plot(d["rows"], d["meta"], a.plot)
        return
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

    def row(name, weft_s, peer_name, peer_s, count=None):
        n = flop if count is None else count  # count 0: no FLOP rate (bandwidth- or exp-bound ops)
        r = dict(name=name, weft_ms=weft_s * 1e3, gflops=n / weft_s / 1e9 if n else None, peer=peer_name,
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
    p = timed(lambda: naive_recurrent_gla(q, k, v, gk), a.reps) if have_fla else None
    row("GLA chunk forward", w, "fla naive_recurrent_gla", p)
    w = timed(lambda: wt.chunk_gated_delta_rule(q, k, v, g, beta), a.reps)
    p = timed(lambda: naive_chunk_gated_delta_rule(q, k, v, g, beta), a.reps) if have_fla else None
    row("gated DeltaNet chunk forward", w, "fla naive_chunk_gated_delta_rule", p)
    w = timed(lambda: wt.chunk_simple_gla(q, k, v, g), a.reps)
    row("simple GLA chunk forward", w, None, None)
    # forward + backward, at T_backward tokens
    if a.T_backward:
        Tb = a.T_backward
        q, k, v, gk, g, beta = (x[:, :Tb].contiguous() for x in (q, k, v, gk, g, beta))
        flop = 2 * Tb * H * (64 * K + 64 * V + 2 * K * V)  # forward's count (the backward is about 2x more)
        w = timed(lambda: fwd_bwd(lambda *x: wt.chunk_gla(*x), q, k, v, gk), a.reps)
        p = timed(lambda: fwd_bwd(lambda *x: naive_recurrent_gla(*x), q, k, v, gk), 1) if have_fla else None
        row(f"GLA chunk forward + backward, T = {Tb}", w, "fla naive_recurrent_gla + autograd", p)
        w = timed(lambda: fwd_bwd(lambda *x: wt.chunk_gated_delta_rule(*x), q, k, v, g, beta), a.reps)
        p = (timed(lambda: fwd_bwd(lambda *x: naive_chunk_gated_delta_rule(*x), q, k, v, g, beta), a.reps)
             if have_fla else None)
        row(f"gated DeltaNet chunk forward + backward, T = {Tb}", w, "fla naive_chunk_gated_delta_rule + autograd", p)

    # softmax attention, causal: weft_torch.flash_attn_func beside torch's own CPU SDPA kernel
    from weft_torch.flash_attn import flash_attn_func

    qa, ka, va = (torch.randn(B, T, H, K) for _ in range(3))
    flop_attn = 2 * T * T * H * K  # causal: half of 4 T^2 H D
    w = timed(lambda: flash_attn_func(qa, ka, va, causal=True), a.reps)
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (qa, ka, va))  # SDPA's [B,H,T,D], outside the timing
    p = timed(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True), a.reps)
    rows.append(dict(name=f"attention forward, causal, D = {K}", weft_ms=w * 1e3, gflops=flop_attn / w / 1e9,
                     peer="torch SDPA (CPU)", peer_ms=p * 1e3, speedup=p / w))
    print(json.dumps(rows[-1]), flush=True)
    del qa, ka, va, qt, kt, vt

    # Mamba-1 at Mamba-130M's shape (B = 1, Dm = 1536, Ns = 16, conv width 4), in mamba's layout
    # ([B, D, L] contiguous, as mamba_simple.py passes them), beside mamba_ssm's and causal-conv1d's
    # own pure-torch references (selective_scan_ref, causal_conv1d_ref: F.conv1d)
    mamba_rows(torch, a, row, fwd_bwd)

    # decode-step call overhead: B = 1, one token, at the benchmark's heads and at one small head
    # (where the kernel is short, so the fixed cost of the binding is what remains)
    decs = [decode_overhead(torch, wt, H, K, V), decode_overhead(torch, wt, 1, 16, 16)]
    for d in decs:
        print(json.dumps(d), flush=True)

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
        gf = "-" if r["gflops"] is None else f"{r['gflops']:.1f} ({r['gflops'] / sgemm:.0%})"
        print(f"| {r['name']} | {r['weft_ms']:.1f} | {gf} | {r['peer'] or '-'} | {pm} | {sp} |")
    print("\n| decode step, µs per call | raw C++ call | torch.ops.weft | python wrapper |\n|---|---|---|---|")
    for d in decs:
        print(f"| {d['name']} | {d['raw_us']:.1f} | {d['torch_ops_us']:.1f} (+{d['overhead_ops_us']:.1f}) | "
              f"{d['python_wrapper_us']:.1f} (+{d['overhead_python_us']:.1f}) |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows, decode=decs), f, indent=1)
    if a.plot:
        plot(rows, meta, a.plot)


def mamba_rows(torch, a, row, fwd_bwd, Dm=1536, Ns=16, width=4):
    import os
    import sys

    from weft_torch.mamba import causal_conv1d_fn, selective_scan_fn

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "xcheck"))
    try:
        import mamba_refs

        scan_ref, conv_ref = mamba_refs.load("selective_scan_ref", "causal_conv1d_ref")
    except ImportError:
        scan_ref = conv_ref = None
    for T, backward in ((a.T, False), (a.mamba_T_backward, True)):
        if not T:
            continue
        u, z = torch.randn(1, Dm, T), torch.randn(1, Dm, T)
        delta = torch.randn(1, Dm, T) * 0.5 - 2.0
        A = -torch.rand(Dm, Ns) - 0.5
        B, C = torch.randn(1, Ns, T), torch.randn(1, Ns, T)
        D, bias = torch.randn(Dm), torch.randn(Dm) * 0.1
        w, wb = torch.randn(Dm, width), torch.randn(Dm)
        tag = f", T = {T}"

        def scan(f):
            return lambda *x: f(*x, D=D, delta_bias=bias, delta_softplus=True)

        def conv(f):
            return lambda x: f(x, w, wb, activation="silu")

        if not backward:
            t = timed(lambda: selective_scan_fn(u, delta, A, B, C, D, z, bias, True), a.reps)
            p = timed(lambda: scan_ref(u, delta, A, B, C, D, z, bias, True), 1) if scan_ref else None
            row("Mamba-1 selective_scan_fn forward" + tag, t, "mamba_ssm selective_scan_ref", p, 0)
            t = timed(lambda: causal_conv1d_fn(u, w, wb, activation="silu"), a.reps)
            p = timed(lambda: conv_ref(u, w, wb, activation="silu"), a.reps) if conv_ref else None
            row("causal_conv1d_fn forward, silu" + tag, t, "causal-conv1d causal_conv1d_ref", p, 0)
        else:
            t = timed(lambda: fwd_bwd(lambda *x: (scan(selective_scan_fn)(*x),), u, delta, A, B, C), a.reps)
            p = (timed(lambda: fwd_bwd(lambda *x: (scan(scan_ref)(*x),), u, delta, A, B, C), 1) if scan_ref
                 else None)
            row("Mamba-1 selective_scan_fn forward + backward" + tag, t, "selective_scan_ref + autograd", p, 0)
            for Tc in (T, a.T):  # the conv's reference has no T^2 term: also at the forward's T
                x = torch.randn(1, Dm, Tc)
                t = timed(lambda: fwd_bwd(lambda x: (conv(causal_conv1d_fn)(x),), x), a.reps)
                p = timed(lambda: fwd_bwd(lambda x: (conv(conv_ref)(x),), x), a.reps) if conv_ref else None
                row(f"causal_conv1d_fn forward + backward, T = {Tc}", t, "causal_conv1d_ref + autograd", p, 0)


def decode_overhead(torch, wt, H, K, V, n=1000, rounds=9):
    """Seconds per decode step (simple GLA, B = 1) three ways, interleaved over `rounds`
    rounds (medians): the raw C++ call, torch.ops.weft, weft_torch's Python wrapper."""
    import torch.nn.functional as F

    qs, ks, vs = torch.randn(1, 1, H, K), F.normalize(torch.randn(1, 1, H, K), dim=-1), torch.randn(1, 1, H, V)
    gs = torch.full((1, 1, H), -0.05)
    state = torch.zeros(1, H, K, V)
    op = torch.ops.weft.linear_attention_step

    def steps():
        t = time.perf_counter()
        for _ in range(n):
            op(qs, ks, vs, "scalar", gs, None, None, None, state, None, None, None, False)
        return (time.perf_counter() - t) / n

    def steps_py():
        t = time.perf_counter()
        for _ in range(n):
            wt.linear_attention_step("simple_gla", qs, ks, vs, state, g=gs)
        return (time.perf_counter() - t) / n

    r_raw, r_op, r_py = [], [], []
    for _ in range(rounds):
        r_raw.append(torch.ops.weft._time_raw_step(qs, ks, vs, "scalar", gs, None, state, n))
        r_op.append(steps())
        r_py.append(steps_py())
    raw, via_op, via_py = (statistics.median(x) for x in (r_raw, r_op, r_py))
    return dict(name=f"H = {H}, K = V = {K}", raw_us=raw * 1e6, torch_ops_us=via_op * 1e6,
                python_wrapper_us=via_py * 1e6, overhead_ops_us=(via_op - raw) * 1e6,
                overhead_python_us=(via_py - raw) * 1e6)


def plot(rows, meta, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["peer_ms"] is not None]
    fig, ax = plt.subplots(figsize=(9, 4))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r["peer_ms"] for r in rows], height=0.4, label="peer: the op's own torch reference (FLA, mamba_ssm, causal-conv1d; torch SDPA for attention)", color="#bbb")
    ax.barh([i - 0.2 for i in y], [r["weft_ms"] for r in rows], height=0.4, label="weft_torch", color="#3b7dd8")
    for i, r in zip(y, rows):
        ax.text(r["weft_ms"] * 1.1, i - 0.2, f"{r['speedup']:.1f}x", va="center", fontsize=8)
    ax.set_yticks(list(y), [r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale), lower is better")
    ax.set_title(f"PyTorch CPU ops, {meta['threads']} threads, fp32, H = {meta['shape']['H']}, "
                 f"K = V = {meta['shape']['K']} ({meta['date']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
