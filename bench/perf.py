#!/usr/bin/env python3
"""Runs weft's benchmarks and reports them beside their peers (same run).

  python3 bench/perf.py run    [--build build/default] [--out bench/results/run.json] [--filter REGEX] [--families]
  python3 bench/perf.py report [bench/results/run.json] [--plots docs/perf]

`run` executes every bench/*/bench_* binary of the build with 2 OpenMP threads bound one per
core, Google Benchmark's JSON output merged into one file (with the machine's context).
`report` prints markdown tables: each benchmark's time and rate, and the ratios that
docs/perf.md quotes (weft / peer, weft / machine limit), all from the one file, because
memory bandwidth on these machines varies up to 2x between processes. With --plots it
writes PNG charts (matplotlib) into the given folder.
"""
import argparse
import glob
import json
import os
import subprocess
import sys

# (label, weft benchmark, peer benchmark, counter) -> ratio weft/peer of the counter
RATIOS = [
    ("reduce vs 2-thread copy (read bytes)", "reduce_weft_kokkos", "copy_2threads", "GB/s", 2.0),
    ("reduce vs read-only bandwidth", "reduce_weft_kokkos", "read_2threads", "GB/s", 1.0),
    ("reduce vs std::reduce (1 thread)", "reduce_weft_kokkos", "reduce_std_reduce", "GB/s", 1.0),
    ("reduce vs TBB std::reduce(par)", "reduce_weft_kokkos", "reduce_std_reduce_par_tbb", "GB/s", 1.0),
    ("reduce vs Kokkos::parallel_reduce", "reduce_weft_kokkos", "reduce_kokkos_parallel_reduce", "GB/s", 1.0),
    ("reduce, user monoid vs weft::plus", "reduce_weft_kokkos_user_monoid", "reduce_weft_kokkos", "GB/s", 1.0),
    ("scan vs 2-thread copy", "scan_weft_plus", "bench_scan:copy_2threads", "GB/s", 1.0),
    ("scan vs std::inclusive_scan (1 thread)", "scan_weft_plus", "scan_std_inclusive_scan", "GB/s", 1.0),
    ("scan vs TBB std::inclusive_scan(par)", "scan_weft_plus", "scan_tbb_par", "GB/s", 1.0),
    ("scan vs Kokkos::parallel_scan", "scan_weft_plus", "scan_kokkos_parallel_scan", "GB/s", 1.0),
    ("scan, user monoid vs weft::plus", "scan_weft_user_monoid", "scan_weft_plus", "GB/s", 1.0),
    ("recurrence [8,2^20,8] vs 2-thread copy", "recurrence_weft/8/8", "bench_scan:copy_2threads", "GB/s", 1.0),
    ("recurrence [8,2^20,8] vs loop parallel over B", "recurrence_weft/8/8", "recurrence_loop_parallel_b/8/8", "GB/s", 1.0),
    ("recurrence [1,2^26,1] vs 2-thread copy", "recurrence_weft/1/1", "bench_scan:copy_2threads", "GB/s", 1.0),
    ("recurrence [1,2^26,1] vs sequential loop (1 thread: B = 1)", "recurrence_weft/1/1", "recurrence_loop_parallel_b/1/1", "GB/s", 1.0),
    ("linear attention chunk C=64 vs OpenBLAS chunk reference, scalar gate", "weft_chunk/scalar/64",
     "blas_chunk/scalar/64", "GFLOP/s", 1.0),
    ("linear attention chunk C=64 vs OpenBLAS chunk reference, vector gate", "weft_chunk/vector/64",
     "blas_chunk/vector/64", "GFLOP/s", 1.0),
    ("linear attention backward vs forward token loop, scalar (forward / backward time)", "weft_backward/scalar",
     "weft_recurrent/scalar", "GFLOP/s", 1.0),
    ("linear attention backward vs forward token loop, vector", "weft_backward/vector", "weft_recurrent/vector",
     "GFLOP/s", 1.0),
    ("linear attention backward vs forward token loop, mLSTM", "weft_backward/mlstm", "weft_recurrent/mlstm",
     "GFLOP/s", 1.0),
    ("linear attention backward vs forward token loop, gated DeltaNet", "weft_backward/gated_delta",
     "weft_recurrent/gated_delta", "GFLOP/s", 1.0),
    ("attention forward vs sgemm-blocked OpenBLAS reference", "weft_forward", "sgemm_blocked", "GFLOP/s", 1.0),
    ("attention forward vs the FMA peak", "weft_forward", "fma_peak", "GFLOP/s", 1.0),
    ("attention backward vs the FMA peak", "weft_backward", "fma_peak", "GFLOP/s", 1.0),
    ("attention forward, bf16 inputs on AMX vs fp32", "weft_forward_bf16/2", "weft_forward_f32", "GFLOP/s", 1.0),
    ("selective scan forward vs plain expf loop (ggml's approach), Dm 1536 Ns 16", "scan_fwd_weft/1536/16",
     "scan_fwd_plain_expf/1536/16", "items_per_second", 1.0),
    ("selective scan forward vs plain expf loop, Dm 1024 Ns 128", "scan_fwd_weft/1024/128",
     "scan_fwd_plain_expf/1024/128", "items_per_second", 1.0),
    ("selective scan backward time / forward time, Dm 1536 Ns 16", "scan_fwd_weft/1536/16",
     "scan_bwd_weft/1536/16", "items_per_second", 1.0),
    ("selective scan backward time / forward time, Dm 1024 Ns 128", "scan_fwd_weft/1024/128",
     "scan_bwd_weft/1024/128", "items_per_second", 1.0),
    ("selective scan step (64 sequences) vs copy of the states", "step_weft", "step_copy_2threads", "GB/s", 1.0),
    ("causal conv1d forward vs 2-thread copy", "conv1d_forward/silu:0", "bench_conv1d:copy_2threads", "GB/s", 1.0),
    ("causal conv1d forward, silu, vs 2-thread copy", "conv1d_forward/silu:1", "bench_conv1d:copy_2threads", "GB/s",
     1.0),
    ("causal conv1d backward vs 2-thread copy", "conv1d_backward", "bench_conv1d:copy_2threads", "GB/s", 1.0),
    ("causal conv1d step vs in-cache copy", "conv1d_step", "copy_step_2threads", "GB/s", 1.0),
    # communication and overlap (bench_overlap: 2 MPI ranks; time ratios)
    ("reduce_scatter 64 MiB: Open MPI's time / weft's ring", "collective/reduce_scatter/mpi/iterations:3",
     "collective/reduce_scatter/weft_ring/iterations:3", "real_time", 1.0),
    ("reduce_scatter 64 MiB: weft's time / exchange-and-add bound",
     "collective/reduce_scatter/weft_ring/iterations:3",
     "collective/reduce_scatter/exchange_add_bound/iterations:3", "real_time", 1.0),
    ("all_reduce 64 MiB: Open MPI's time / weft's ring", "collective/all_reduce/mpi/iterations:3",
     "collective/all_reduce/weft_ring/iterations:3", "real_time", 1.0),
    ("all_reduce 64 MiB: weft's time / exchange-add-exchange bound", "collective/all_reduce/weft_ring/iterations:3",
     "collective/all_reduce/exchange_add_exchange_bound/iterations:3", "real_time", 1.0),
    ("MPI all_gather_matmul 1 chunk: time / communicate-then-compute",
     "mpi/all_gather_matmul/overlapped/chunks:1/iterations:3",
     "mpi/all_gather_matmul/serial_weft_all_gather/iterations:3", "real_time", 1.0),
    ("MPI all_gather_matmul 2 chunks: time / communicate-then-compute",
     "mpi/all_gather_matmul/overlapped/chunks:2/iterations:3",
     "mpi/all_gather_matmul/serial_weft_all_gather/iterations:3", "real_time", 1.0),
    ("MPI matmul_reduce_scatter 1 chunk: time / compute-then-communicate",
     "mpi/matmul_reduce_scatter/overlapped/chunks:1/iterations:3",
     "mpi/matmul_reduce_scatter/serial/iterations:3", "real_time", 1.0),
    ("MPI matmul_reduce_scatter 2 chunks: time / compute-then-communicate",
     "mpi/matmul_reduce_scatter/overlapped/chunks:2/iterations:3",
     "mpi/matmul_reduce_scatter/serial/iterations:3", "real_time", 1.0),
    ("link all_gather_matmul: speed-up of 4 chunks over communicate-then-compute",
     "link/all_gather_matmul/serial/iterations:3", "link/all_gather_matmul/overlapped/chunks:4/iterations:3",
     "real_time", 1.0),
    ("link matmul_reduce_scatter: speed-up of 4 chunks over compute-then-communicate",
     "link/matmul_reduce_scatter/serial/iterations:3",
     "link/matmul_reduce_scatter/overlapped/chunks:4/iterations:3", "real_time", 1.0),
    ("link bucketed_all_reduce: speed-up over reduce-after-backward", "link/bucketed_all_reduce/serial/iterations:3",
     "link/bucketed_all_reduce/overlapped/iterations:3", "real_time", 1.0),
    # CUDA (bench_cuda; only where a GPU ran it)
    ("CUDA scan vs cub::DeviceScan::InclusiveSum", "scan/weft_plus", "scan/cub_sum", "GB/s", 1.0),
    ("CUDA scan vs device copy", "scan/weft_plus", "bench_cuda:copy", "GB/s", 1.0),
    ("CUDA scan, user monoid vs CUB with the same operator", "scan/weft_user_monoid", "scan/cub_user_op", "GB/s", 1.0),
    ("CUDA recurrence [1,T,1] vs CUB affine pair scan (elements/s)", "recurrence/weft/1/1", "recurrence/cub_affine",
     "items_per_second", 1.0),
    ("CUDA recurrence [1,T,1] vs device copy", "recurrence/weft/1/1", "bench_cuda:copy", "GB/s", 1.0),
    ("CUDA recurrence [8,T,8] vs device copy", "recurrence/weft/8/8", "bench_cuda:copy", "GB/s", 1.0),
    ("CUDA linear attention, scalar: chunk vs recurrent", "la/weft_chunk/scalar", "la/weft_recurrent/scalar",
     "GFLOP/s", 1.0),
    ("CUDA linear attention, mLSTM: chunk vs recurrent", "la/weft_chunk/mlstm", "la/weft_recurrent/mlstm",
     "GFLOP/s", 1.0),
]


def run(args):
    binaries = sorted(glob.glob(os.path.join(args.build, "bench", "*", "bench_*")))
    binaries = [b for b in binaries if os.path.isfile(b) and os.access(b, os.X_OK) and not b.endswith(".json")]
    if not binaries:
        sys.exit(f"no benchmark binaries under {args.build}/bench (build the default preset first)")
    env = dict(os.environ, OMP_NUM_THREADS="2", OMP_PROC_BIND="spread", OMP_PLACES="threads")
    # OpenBLAS 0.3.21 misdetects Zen 5: its AVX-512 kernels by name, on CPUs with AVX-512 only
    with open("/proc/cpuinfo") as f:
        if " avx512f" in f.read():
            env.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
    env.pop("WEFT_BENCH_SMOKE", None)
    merged = {"context": None, "benchmarks": []}
    for b in binaries:
        name = os.path.basename(b)
        out = f"/tmp/weft_{name}.json"
        # five repetitions of 0.2 s each, randomly interleaved with the other benchmarks of the
        # binary: the host's bandwidth drifts within a process too, and a median over
        # repetitions spread across the run compares a benchmark with its peer over the same
        # stretch of time, where one block per benchmark in sequence did not
        cmd = [b, f"--benchmark_out={out}", "--benchmark_out_format=json", "--benchmark_repetitions=5",
               "--benchmark_min_time=0.2", "--benchmark_enable_random_interleaving=true",
               "--benchmark_report_aggregates_only=true"]
        if args.filter:
            cmd.append(f"--benchmark_filter={args.filter}")
        print("running", " ".join(cmd), file=sys.stderr)
        if os.path.exists(out):
            os.remove(out)
        rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode
        if rc == 77:  # e.g. bench_cuda without a GPU
            print(f"{name}: skipped (nothing to measure here)", file=sys.stderr)
            continue
        if rc != 0:
            sys.exit(f"{name} failed with exit code {rc}")
        if not os.path.exists(out) or os.path.getsize(out) == 0:  # the filter matched nothing here
            continue
        with open(out) as f:
            data = json.load(f)
        merged["context"] = merged["context"] or data["context"]
        for bm in data["benchmarks"]:
            bm["binary"] = name
            merged["benchmarks"].append(bm)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(merged, f, indent=1)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.families:
        family_of = {os.path.basename(b): os.path.basename(os.path.dirname(b)) for b in binaries}
        for fam in sorted({family_of[bm["binary"]] for bm in merged["benchmarks"]}):
            path = os.path.join("bench", "results", f"{fam}.json")
            part = {"context": merged["context"],
                    "benchmarks": [bm for bm in merged["benchmarks"] if family_of[bm["binary"]] == fam]}
            with open(path, "w") as f:
                json.dump(part, f, indent=1)
            print(f"wrote {path}", file=sys.stderr)


def medians(data):
    """name -> counters of the median aggregate (plain runs when there are no aggregates)."""
    out = {}
    for bm in data["benchmarks"]:
        if bm.get("run_type") == "aggregate" and bm.get("aggregate_name") != "median":
            continue
        name = bm.get("run_name", bm["name"]).replace("/real_time", "").replace("/manual_time", "")
        out[name] = bm
        out[bm["binary"] + ":" + name] = bm
    return out


def pair(m, a, b):
    """The benchmarks of a ratio: the peer from a's own binary (process) when it has one, since
    bandwidth varies up to 2x between processes; otherwise the named one, flagged."""
    A = m.get(a)
    if A is None:
        return None, None, False
    B = m.get(b) if ":" in b else m.get(A["binary"] + ":" + b, m.get(b))
    return A, B, B is not None and B["binary"] == A["binary"]


def rate(bm):
    for k in ("GB/s", "GFLOP/s"):
        if k in bm:
            return k, bm[k] / 1e9 if bm[k] > 1e6 else bm[k]
    return None, None


def report(args):
    with open(args.file) as f:
        data = json.load(f)
    m = medians(data)
    ctx = data["context"]
    print(f"Run {ctx.get('date')} on {ctx.get('host_name')}, {ctx.get('num_cpus')} CPUs, "
          f"threads={ctx.get('threads', '?')} (medians of 5 randomly interleaved repetitions)\n")
    print("| benchmark | time | rate |\n|---|---|---|")
    seen = set()
    for bm in data["benchmarks"]:
        if bm.get("run_type") == "aggregate" and bm.get("aggregate_name") != "median":
            continue
        name = bm.get("run_name", bm["name"]).replace("/real_time", "").replace("/manual_time", "")
        key = bm["binary"] + ":" + name
        if key in seen:
            continue
        seen.add(key)
        unit, r = rate(bm)
        t = bm["real_time"]
        print(f"| {bm['binary']}: {name} | {t:.3g} {bm['time_unit']} | {r:.3g} {unit} |" if unit else
              f"| {bm['binary']}: {name} | {t:.3g} {bm['time_unit']} | |")
    print("\n| ratio (same run) | value | peer measured in |\n|---|---|---|")
    for label, a, b, counter, scale in RATIOS:
        A, B, same = pair(m, a, b)
        if A is not None and B is not None and counter in A and counter in B:
            where = "the same process" if same else f"another process ({B['binary']})"
            print(f"| {label} | {scale * A[counter] / B[counter]:.2f}x | {where} |")
    if args.plots:
        plot(m, args.plots)


def plot(m, folder):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots", file=sys.stderr)
        return
    os.makedirs(folder, exist_ok=True)
    groups = {  # name -> benchmarks (their bars) [, counter (default GB/s)]
        "scan": ["bench_scan:copy_2threads", "scan_weft_plus", "scan_weft_user_monoid", "scan_std_inclusive_scan",
                 "scan_tbb_par", "scan_kokkos_parallel_scan"],
        "reduce": ["copy_2threads", "read_2threads", "reduce_weft_kokkos", "reduce_weft_kokkos_user_monoid",
                   "reduce_std_reduce", "reduce_std_reduce_par_tbb", "reduce_kokkos_parallel_reduce"],
        "recurrence": ["bench_scan:copy_2threads", "recurrence_weft/8/8", "recurrence_loop_parallel_b/8/8",
                       "recurrence_weft/1/1", "recurrence_loop_parallel_b/1/1"],
        "attention": (["fma_peak", "weft_forward", "sgemm_blocked", "weft_backward", "online_loop"], "GFLOP/s"),
        "selective_scan": (["scan_fwd_plain_expf/1536/16", "scan_fwd_weft/1536/16", "scan_bwd_weft/1536/16",
                            "scan_fwd_plain_expf/1024/128", "scan_fwd_weft/1024/128", "scan_bwd_weft/1024/128"],
                           "items_per_second"),
        "causal_conv1d": ["bench_conv1d:copy_2threads", "conv1d_forward/silu:0", "conv1d_forward/silu:1",
                          "conv1d_backward"],
        "attention_bf16": (["bench_attention_bf16:fma_peak", "bf16_dot_peak", "weft_forward_f32", "weft_forward_bf16/0",
                            "weft_forward_bf16/1", "weft_forward_bf16/2"], "GFLOP/s"),
    }
    for gname, names in groups.items():
        names, counter = names if isinstance(names, tuple) else (names, "GB/s")
        # every bar from the process of the group's first weft benchmark where it has one
        anchor = next((m[n]["binary"] for n in names if "weft" in n and n in m), None)
        found = {n: m.get(f"{anchor}:{n}", m.get(n)) if ":" not in n else m.get(n) for n in names}
        names = [n for n in names if found[n] is not None and counter in found[n]]
        if not names:
            continue
        vals = [found[n][counter] / 1e9 if found[n][counter] > 1e6 else found[n][counter] for n in names]
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.2))
        colors = ["tab:blue" if ("weft" in n or "conv1d_" in n) else "tab:gray" for n in names]
        ax.barh([n.split(":")[-1] for n in names], vals, color=colors)
        ax.invert_yaxis()
        ax.set_xlabel("GB/s (bytes read + written), 2 threads" if counter == "GB/s" else
                      "10^9 state elements per second, 2 threads" if counter == "items_per_second" else
                      f"{counter}, 2 threads")
        ax.set_title(f"weft {gname} (blue) vs peers (grey), one run")
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.1f}", va="center")
        fig.tight_layout()
        path = os.path.join(folder, f"{gname}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"wrote {path}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--build", default="build/default")
    r.add_argument("--out", default="bench/results/run.json")
    r.add_argument("--filter", default="")
    r.add_argument("--families", action="store_true", help="also write bench/results/<family>.json")
    q = sub.add_parser("report")
    q.add_argument("file", nargs="?", default="bench/results/run.json")
    q.add_argument("--plots", default="")
    args = p.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
