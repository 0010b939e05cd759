#!/usr/bin/env python3
"""Optional cross-check: weft::linear_attention against the peers' own reference recurrences.

FLA (`pip install fla-core`): naive_recurrent_linear_attn, naive_recurrent_simple_gla,
naive_recurrent_gla, delta_rule_recurrence, naive_recurrent_gated_delta_rule.
NX-AI mlstm_kernels (`pip install mlstm_kernels`): mlstm_recurrent_sequence__native_fw
(exponential input gate, states in and out) and mlstm_siging_parallel_fw (sigmoid input gate).

Every case is run through `la_xcheck` (serial and Kokkos backends; recurrent mode and chunk
sizes 16, 64, 256) and compared with the peer's output and final state. Both sides compute in
fp32, each within about 1e-5 relative RMSE of the exact recurrence at these lengths (weft's
tests bound it by 1e-5 against an fp64 oracle), so the bound here is the sum of the two:
relative RMSE <= 2e-5, and max |diff| <= 2e-4 * max |reference|. The mLSTM reference runs in
fp64 (mlstm_kernels takes its dtypes from its inputs); its output divides by
max(|q.n|, exp(-m)), which random queries bring near 0 in some tokens, so there the bounds are
twice the peer's own fp32 error against that fp64 run when that is larger.

Gradients: every case is also differentiated through the peer's reference by torch autograd,
for L = sum(o * do) + sum(S_T * dS_T) (+ the mLSTM normalizer and stabilizer) with random
do, dS_T, and compared with weft::linear_attention_backward (serial and Kokkos) on the same
inputs and upstream gradients: dq, dk, dv, the gate gradients and those of the initial states,
under the same bounds (for mLSTM against the fp64 reference, or twice the peer's own fp32 error).

Exit status: 0 all agree, 1 a mismatch or too few comparisons, 77 torch / fla-core absent
(ctest: skipped). A peer that is absent (mlstm_kernels) skips its cases only, and says how many.
Every case that runs must report the serial backend's runs (recurrent, chunks 16, 64, 256 and
the backward; la_xcheck always builds them) and each run every output: a la_xcheck that prints no
run tags, or fewer comparisons than that minimum, fails.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import warnings

try:
    import numpy as np
    import torch
    import torch.nn.functional as F

    warnings.filterwarnings("ignore")  # FLA warns that Triton rolls back to the CPU
    from fla.ops.delta_rule.naive import delta_rule_recurrence
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
    from fla.ops.gla.naive import naive_recurrent_gla
    from fla.ops.linear_attn.naive import naive_recurrent_linear_attn
    from fla.ops.simple_gla.naive import naive_recurrent_simple_gla
except ImportError as e:  # optional check: skipped without its peers
    print(f"skipped: {e} (pip install torch fla-core)")
    sys.exit(77)

try:
    from mlstm_kernels.torch.parallel.native_siging.fw import mlstm_siging_parallel_fw
    from mlstm_kernels.torch.recurrent.native_sequence import mlstm_recurrent_sequence__native_fw

    HAVE_MLSTM = True
except ImportError:
    HAVE_MLSTM = False

REL_RMSE = 2e-5
REL_MAX = 2e-4
# the runs la_xcheck makes on the serial backend whatever else is built (tests/xcheck/la_xcheck.cpp)
SERIAL_FORWARD_RUNS = ("serial-recurrent", "serial-chunk16", "serial-chunk64", "serial-chunk256")
SERIAL_BACKWARD_RUNS = ("backward-serial-c64",)


def make_inputs(gate, B, T, H, K, V, N, state, gen):
    """Inputs of one case, torch fp32 [B,T,H,*] (FLA's layout); states [N,H,*]."""
    r = lambda *s: torch.randn(*s, generator=gen)
    x = {"q": r(B, T, H, K), "k": r(B, T, H, K), "v": r(B, T, H, V)}
    if gate in ("delta", "gated_delta"):  # FLA's layers L2-normalise the keys of the delta rules
        x["k"] = F.normalize(x["k"], dim=-1)
        x["beta"] = torch.sigmoid(r(B, T, H))
    if gate in ("scalar", "gated_delta"):
        x["g"] = F.logsigmoid(r(B, T, H)) / 8
        if T > 40:
            x["g"][:, 40, 0] = -float("inf")  # a reset in head 0
    if gate == "vector":
        x["g"] = F.logsigmoid(r(B, T, H, K)) / 8
        if T > 40:
            x["g"][:, 40, 0, : K // 2] = -float("inf")  # half the key channels of head 0 reset
    if gate.startswith("mlstm"):
        x["i"] = 3 * r(B, T, H)
        x["f"] = 2 + r(B, T, H)
    if state:
        x["s0"] = r(N, H, K, V) / 4
        if gate == "mlstm_exp":
            x["n0"] = r(N, H, K).abs()
            x["m0"] = r(N, H)
    return x


def reference(gate, x, scale):
    """The peer's output [B,T,H,V] and final state(s), fp32."""
    q, k, v = x["q"], x["k"], x["v"]
    s0 = x.get("s0")
    if gate == "none":
        o, s = naive_recurrent_linear_attn(q, k, v, scale=scale, initial_state=s0, output_final_state=True)
        return {"o": o, "s1": s}
    if gate == "scalar":
        o, s = naive_recurrent_simple_gla(q, k, v, x["g"], scale=scale, initial_state=s0, output_final_state=True)
        return {"o": o, "s1": s}
    if gate == "vector":
        o, s = naive_recurrent_gla(q, k, v, x["g"], initial_state=s0, output_final_state=True)
        return {"o": o, "s1": s}
    if gate == "delta":  # head-first layout [B,H,T,*]
        t = lambda a: a.transpose(1, 2).contiguous()
        o, s = delta_rule_recurrence(t(q), t(k), t(v), t(x["beta"]), initial_state=s0, output_final_state=True)
        return {"o": t(o), "s1": s}
    if gate == "gated_delta":
        o, s = naive_recurrent_gated_delta_rule(
            q, k, v, x["beta"], x["g"], scale=scale, initial_state=s0, output_final_state=True
        )
        return {"o": o, "s1": s}
    t = lambda a: a.transpose(1, 2).contiguous()  # mlstm_kernels: [B,H,T,*]
    if gate == "mlstm_exp":  # fp64 (the step takes its dtypes from its inputs and dtype_state)
        d = lambda a: None if a is None else a.double()
        m0 = x["m0"][..., None] if "m0" in x else None
        h, (c, n, m) = mlstm_recurrent_sequence__native_fw(
            d(t(q)), d(t(k)), d(t(v)), d(t(x["i"])), d(t(x["f"])), c_initial=d(s0), n_initial=d(x.get("n0")),
            m_initial=d(m0), return_last_states=True, dtype_state=torch.float64,
        )
        ref = {"o": t(h), "s1": c, "n1": n, "m1": m.reshape(m.shape[0], m.shape[1])}
        # The peer's own fp32 run: its error against fp64 measures how well the case is
        # conditioned (o divides by max(|q.n|, exp(-m)), which random q can bring near 0).
        h32, (c32, n32, m32) = mlstm_recurrent_sequence__native_fw(
            t(q), t(k), t(v), t(x["i"]), t(x["f"]), c_initial=s0, n_initial=x.get("n0"), m_initial=m0,
            return_last_states=True,
        )
        ref["peer_fp32"] = {"o": t(h32)}
        ref["peer_fp32_states"] = {"s1": c32, "n1": n32, "m1": m32.reshape(m32.shape[0], m32.shape[1])}
        return ref
    if gate == "mlstm_sig":  # no states: the parallel form over the whole sequence
        h, _ = mlstm_siging_parallel_fw(t(q), t(k), t(v), t(x["i"]), t(x["f"]))
        return {"o": t(h)}
    raise ValueError(gate)


def reference_varlen(gate, x, scale, cu):
    """Packed sequences: the peer run on each sequence alone; states stacked over sequences."""
    outs, states = [], {}
    for n in range(len(cu) - 1):
        a, b = cu[n], cu[n + 1]
        xs = {key: (val[:, a:b] if val.dim() >= 2 and key not in ("s0", "n0", "m0") else val[n : n + 1])
              for key, val in x.items()}
        if b == a:  # an empty sequence: no output, its final state is its initial state
            r = {"o": x["v"][:, a:a], "s1": xs.get("s0", torch.zeros(1, x["q"].shape[2], x["q"].shape[3],
                                                                      x["v"].shape[3]))}
        else:
            r = reference(gate, xs, scale)
        outs.append(r["o"])
        for key in r:
            if key not in ("o", "peer_fp32", "peer_fp32_states"):  # (no varlen mLSTM case: its fp32 check is not stacked)
                states.setdefault(key, []).append(r[key])
    return {"o": torch.cat(outs, dim=1), **{key: torch.cat(val, dim=0) for key, val in states.items()}}


GRAD_INPUTS = ("q", "k", "v", "g", "beta", "i", "f", "s0", "n0", "m0")
OUTPUTS = ("o", "s1", "n1", "m1")


def gradients(gate, x, scale, cu, gen):
    """Upstream gradients (do, ds1, ...) for the outputs the peer returns, and the gradients of
    L = sum(output * upstream) with respect to every input, by autograd through the peer's
    reference: (upstream, grads, grads of the peer's own fp32 run or None)."""
    leaves = {key: val.clone().requires_grad_(True) for key, val in x.items() if key in GRAD_INPUTS}
    ref = reference(gate, leaves, scale) if cu is None else reference_varlen(gate, leaves, scale, cu)
    up = {"d" + key: torch.randn(*ref[key].shape, generator=gen) for key in OUTPUTS if key in ref}

    def grads_of(outs):
        loss = sum((outs[key].double() * up["d" + key].double()).sum() for key in OUTPUTS if key in outs)
        gs = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, retain_graph=True)
        return {"d" + key: (g if g is not None else torch.zeros_like(leaves[key])).detach()
                for key, g in zip(leaves, gs)}

    g = grads_of(ref)
    g32 = None
    if "peer_fp32" in ref:
        g32 = grads_of({**ref["peer_fp32"], **ref["peer_fp32_states"]})
    return up, g, g32


def write_case(d, gate, dims, x, scale, cu, up=None):
    B, T, H, K, V = dims
    if up:
        for key, val in up.items():
            val.numpy().astype("<f4").tofile(os.path.join(d, key + ".bin"))
    with open(os.path.join(d, "meta.txt"), "w") as f:
        f.write(f"gate {gate}\ndims {B} {T} {H} {K} {V}\nstate {int('s0' in x)}\n")
        if up:
            f.write("grad 1\n")
        if scale is not None:
            f.write(f"scale {scale!r}\n")
        if cu is not None:
            f.write("cu " + " ".join(str(c) for c in cu) + "\n")
    for key, val in x.items():
        val.numpy().astype("<f4").tofile(os.path.join(d, key + ".bin"))


def errors(got, ref):
    """(relative RMSE, max |diff|, max |ref|) of got against ref."""
    ref = ref.double().numpy().ravel()
    diff = np.asarray(got, dtype=np.float64).ravel() - ref
    if not diff.size:
        return 0.0, 0.0, 1.0
    return (np.sqrt(np.mean(diff**2)) / max(np.sqrt(np.mean(ref**2)), 1e-30), np.max(np.abs(diff)),
            max(np.max(np.abs(ref)), 1e-30))


def compare(got, ref, peer32=None):
    """Within the fp32 bounds; where the reference is fp64 and the peer's own fp32 run is given,
    within twice the peer's fp32 error if that is larger (an ill-conditioned case)."""
    rel_rmse, worst, top = errors(got, ref)
    rmse_bound, max_bound = REL_RMSE, REL_MAX * top
    if peer32 is not None:
        p_rmse, p_max, _ = errors(peer32.double().numpy(), ref)
        rmse_bound, max_bound = max(rmse_bound, 2 * p_rmse), max(max_bound, 2 * p_max)
    ok = np.all(np.isfinite(got)) and rel_rmse <= rmse_bound and worst <= max_bound
    return ok, rel_rmse, worst


CASES = [  # gate, (B, T, H, K, V), initial state, scale, cu_seqlens
    ("none", (2, 1, 1, 16, 16), False, None, None),
    ("none", (1, 65, 3, 60, 100), True, 0.5, None),
    ("scalar", (2, 200, 2, 64, 64), True, None, None),
    ("scalar", (1, 65, 3, 60, 100), False, 0.25, None),
    ("scalar", (1, 200, 2, 32, 48), True, None, [0, 0, 1, 70, 70, 200]),
    ("vector", (2, 200, 2, 64, 64), True, None, None),
    ("vector", (1, 65, 3, 60, 100), False, None, None),
    ("vector", (1, 130, 1, 16, 100), False, None, [0, 1, 129, 130]),
    ("delta", (2, 200, 2, 64, 64), True, None, None),
    ("delta", (1, 65, 3, 60, 100), False, None, None),
    ("gated_delta", (2, 200, 2, 64, 64), True, None, None),
    ("gated_delta", (1, 65, 3, 60, 100), False, 0.3, None),
    ("gated_delta", (1, 150, 2, 32, 32), True, None, [0, 0, 17, 150]),
    ("mlstm_exp", (2, 200, 2, 64, 64), True, None, None),
    ("mlstm_exp", (1, 65, 3, 60, 100), False, None, None),
    ("mlstm_sig", (2, 130, 2, 64, 48), False, None, None),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", required=True, help="path of the la_xcheck executable")
    ap.add_argument("--work", help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(20261124)
    failures, checked, minimum, skipped = 0, 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for idx, (gate, dims, state, scale, cu) in enumerate(CASES):
            if gate.startswith("mlstm") and not HAVE_MLSTM:
                skipped += 1
                print(f"skip {gate} B,T,H,K,V={dims}: mlstm_kernels absent")
                continue
            if gate in ("delta", "mlstm_exp", "mlstm_sig") and scale is not None:
                raise ValueError("these peers have no scale argument")
            d = os.path.join(args.work or tmp, f"case{idx}")
            os.makedirs(d, exist_ok=True)
            x = make_inputs(gate, *dims, dims[0] if cu is None else len(cu) - 1, state, gen)
            with torch.no_grad():
                ref = reference(gate, x, scale) if cu is None else reference_varlen(gate, x, scale, cu)
            up, gref, g32 = gradients(gate, x, scale, cu, gen)
            write_case(d, gate, dims, x, scale, cu, up)
            runs = subprocess.run([args.cli, d], check=True, capture_output=True, text=True).stdout.split()
            bad = failures
            missing = [r for r in SERIAL_FORWARD_RUNS + SERIAL_BACKWARD_RUNS if r not in runs]
            if missing:  # la_xcheck printed no runs, or not those it always makes
                failures += 1
                print(f"MISSING {gate} {dims} cu={cu}: la_xcheck reported runs {runs}, lacks {missing}")
            peer32 = ref.pop("peer_fp32", {})
            ref.pop("peer_fp32_states", None)
            minimum += len(SERIAL_FORWARD_RUNS) * len(ref) + len(SERIAL_BACKWARD_RUNS) * len(gref)
            for run in runs:
                want, bounds = (gref, g32 or {}) if run.startswith("backward") else (ref, peer32)
                for key, r in want.items():
                    got = np.fromfile(os.path.join(d, f"{key}.{run}.bin"), dtype="<f4")
                    ok, rel, worst = compare(got, r, bounds.get(key))
                    checked += 1
                    if not ok:
                        failures += 1
                        print(f"MISMATCH {gate} {dims} cu={cu} {run} {key}: rel RMSE {rel:.2e}, max |diff| {worst:.2e}")
                    elif os.environ.get("XCHECK_VERBOSE"):
                        print(f"  {run} {key}: rel RMSE {rel:.2e}, max |diff| {worst:.2e}")
            verdict = "agree" if failures == bad else "DIFFER"
            print(f"{gate:12s} B,T,H,K,V={dims} state={int(state)} cu={cu}: {len(runs)} runs x "
                  f"{sorted(ref)} + gradients {sorted(gref)} {verdict}")
    print(f"{checked} comparisons, {failures} mismatches (rel RMSE <= {REL_RMSE}, max |diff| <= {REL_MAX} max |ref|)")
    if skipped:
        print(f"{skipped} of {len(CASES)} cases skipped: mlstm_kernels absent (pip install mlstm_kernels)")
    if checked == 0 or checked < minimum:
        print(f"FAIL: {checked} comparisons, fewer than the {minimum} the serial runs alone must give")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
