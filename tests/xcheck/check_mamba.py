#!/usr/bin/env python3
"""Optional cross-check: weft's ssm family against mamba_ssm's and causal-conv1d's own references.

mamba-ssm (PyPI `mamba-ssm`): selective_scan_ref (mamba_ssm/ops/selective_scan_interface.py) and
selective_state_update_ref (mamba_ssm/ops/triton/selective_state_update.py).
causal-conv1d (PyPI `causal-conv1d`): causal_conv1d_ref, causal_conv1d_update_ref
(causal_conv1d/causal_conv1d_interface.py) and causal_conv1d_varlen_states_ref
(causal_conv1d/causal_conv1d_varlen.py).

Loading: tests/xcheck/mamba_refs.py executes just the reference functions out of the installed
packages' files (both are installed without their CUDA builds, and importing their modules would
import the missing extensions).

Cases (each run through `ssm_xcheck`, on the Kokkos backend when it is built, else serial):
  scan:      selective_scan vs selective_scan_ref (mamba's layout (B, Dm, T); B, C (B, Ns, T) or
             grouped (B, G, Ns, T)) with and without D, z, delta_bias, delta_softplus (one dt
             above softplus's threshold 20), final state (return_last_state); varlen packed
             sequences (empty and length-1 ones) against the reference run on each sequence;
             some cases pass mamba's channel-major memory to weft as strided views ("cm").
             Backward: selective_scan_backward vs torch.autograd through selective_scan_ref of
             L = sum(y * dy) + sum(last_state * dh): du, ddelta, dA, dB, dC, dD, dz, d delta_bias.
             From initial states (.initial_state; selective_scan_ref has none): forward only,
             against selective_state_update_ref chained token by token (its in-place state
             update cannot be differentiated by autograd).
  scan_step: selective_scan_step (several tokens one after the other, state in place) vs
             selective_state_update_ref (its heads form for grouped B, C).
  conv:      causal_conv1d vs causal_conv1d_ref (activation None / silu, bias or not,
             initial_states, return_final_states, widths 2, 3, 4, 6); varlen via the reference's
             seq_idx and causal_conv1d_varlen_states_ref for the final states. Backward:
             causal_conv1d_backward vs autograd of L = sum(y * dy) + sum(final * dfinal):
             dx, dweight, dbias, d initial_states.
  conv_step: causal_conv1d_step (several tokens) vs causal_conv1d_update_ref: y and the state.

Precision: weft runs in fp32. selective_scan_ref computes in fp32 whatever its inputs (it calls
.float()), so for `scan` (forward and autograd) both sides are fp32; the other references honour
their inputs' dtype and run in fp64, so there weft's own fp32 error is measured. One bound for
every output, as in check_fla.py: relative RMSE <= 2e-5 and max |diff| <= 2e-4 max |ref|
(measured on x86-64 with AVX-512, torch 2.15: at most 1.8e-6, conv's dbias summed over 2000
tokens; the scan's outputs and gradients at most 5.5e-7 and 8.3e-7).
The summary prints, per op and output, the worst of both over the cases (scan-h0: the scans
from initial states; -bwd: the gradients).

Exit status: 0 all agree; 1 a mismatch, a missing output or run; 77 torch, einops, mamba-ssm or
causal-conv1d absent (ctest: skipped).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError as e:  # optional check: skipped without its peers
    print(f"skipped: {e} (scripts/xcheck-mamba.sh installs torch, einops, mamba-ssm, causal-conv1d)")
    sys.exit(77)


try:
    from mamba_refs import load as load_refs

    (selective_scan_ref, selective_state_update_ref, causal_conv1d_ref, causal_conv1d_update_ref,
     causal_conv1d_varlen_states_ref) = load_refs("selective_scan_ref", "selective_state_update_ref",
                                                  "causal_conv1d_ref", "causal_conv1d_update_ref",
                                                  "causal_conv1d_varlen_states_ref")
except ImportError as e:
    print(f"skipped: {e} (scripts/xcheck-mamba.sh installs mamba-ssm and causal-conv1d without CUDA)")
    sys.exit(77)

# (relative RMSE, max |diff| / max |ref|) bounds by the precision of the reference: weft (fp32)
# against the fp32-only selective_scan_ref, and against the fp64 runs of the others.
BOUNDS = {"fp32": (2e-5, 2e-4), "fp64": (2e-5, 2e-4)}
RUN = re.compile(r"^(fwd|bwd|step)-(kokkos|serial)$")  # the run tags ssm_xcheck prints

# ----- layouts: the references' (mamba's) index order <-> the file's (weft's, or mamba's with cm)


def to_file(t, kind, cm):
    """t in mamba's order -> the array ssm_xcheck reads: per-token (B, Dm, T) -> [B,T,Dm]; B, C
    (B, (G,) Ns, T) -> [B,T,(G,)Ns]; with cm, mamba's own memory (weft reads it through strides)."""
    t = t.detach()
    if not cm and kind == "tok":
        t = t.transpose(1, 2)
    elif not cm and kind == "bc":
        t = t.movedim(-1, 1)
    return t.contiguous().to(torch.float32).numpy()


def from_file(a, shape, kind, cm):
    """ssm_xcheck's output array -> a torch fp64 tensor of mamba's `shape`."""
    a = torch.from_numpy(np.asarray(a, dtype=np.float64))
    if cm or kind not in ("tok", "bc"):
        return a.reshape(shape)
    if kind == "tok":
        return a.reshape(shape[0], shape[2], shape[1]).transpose(1, 2)
    return a.reshape(shape[0], shape[-1], *shape[1:-1]).movedim(1, -1)


# ----- inputs and references


def scan_inputs(c, gen, dtype=torch.float32):
    B, T, Dm, Ns, G = c["dims"]
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)
    x = {"u": r(B, Dm, T)}
    if c.get("softplus"):
        x["delta"] = r(B, Dm, T) * 0.5
        if T > 3:
            x["delta"][0, 0, 3] = 25.0  # above softplus's threshold: dt = delta + bias
    else:
        x["delta"] = 0.001 + 0.1 * torch.rand(B, Dm, T, generator=gen, dtype=dtype)
    x["A"] = -torch.exp(0.5 * r(Dm, Ns)) * torch.arange(1, Ns + 1, dtype=dtype)  # as Mamba's -exp(A_log)
    bc = (B, Ns, T) if G == 0 else (B, G, Ns, T)
    x["Bm"], x["Cm"] = r(*bc), r(*bc)
    if c.get("D"):
        x["D"] = r(Dm)
    if c.get("z"):
        x["z"] = r(B, Dm, T)
    if c.get("bias"):  # dt_proj's initialisation: softplus(bias) in [1e-3, 1e-1]
        dt = torch.exp(torch.rand(Dm, generator=gen, dtype=dtype) * (np.log(0.1) - np.log(1e-3)) + np.log(1e-3))
        x["bias"] = dt + torch.log(-torch.expm1(-dt)) if c.get("softplus") else dt
    return x


def scan_one(x, c):
    """selective_scan_ref on one sequence set: (y (B, Dm, T), last_state (B, Dm, Ns))."""
    if x["u"].shape[2] == 0:  # the reference stacks no tokens: an empty sequence's state is 0
        return x["u"][..., :0], torch.zeros(x["u"].shape[0], *x["A"].shape)
    return selective_scan_ref(x["u"], x["delta"], x["A"], x["Bm"], x["Cm"], D=x.get("D"), z=x.get("z"),
                              delta_bias=x.get("bias"), delta_softplus=bool(c.get("softplus")),
                              return_last_state=True)


def scan_reference(x, c):
    if c.get("cu") is None:
        y, h = scan_one(x, c)
        return {"y": y, "h1": h}
    ys, hs = [], []
    for a, b in zip(c["cu"][:-1], c["cu"][1:]):
        xs = {k: (v[..., a:b] if k in ("u", "delta", "Bm", "Cm", "z") else v) for k, v in x.items()}
        y, h = scan_one(xs, c)
        ys.append(y)
        hs.append(h)
    return {"y": torch.cat(ys, dim=2), "h1": torch.cat(hs, dim=0)}


def step_inputs(c, gen):
    S, N, Dm, Ns, G = c["dims"]
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    x = {"state0": r(N, Dm, Ns), "u": r(S, N, Dm), "delta": r(S, N, Dm) * 0.5 if c.get("softplus") else
         0.001 + 0.1 * torch.rand(S, N, Dm, generator=gen, dtype=torch.float64),
         "A": -torch.exp(0.5 * r(Dm, Ns)) * torch.arange(1, Ns + 1, dtype=torch.float64)}
    bc = (S, N, Ns) if G == 0 else (S, N, G, Ns)
    x["Bm"], x["Cm"] = r(*bc), r(*bc)
    if c.get("D"):
        x["D"] = r(Dm)
    if c.get("z"):
        x["z"] = r(S, N, Dm)
    if c.get("bias"):
        x["bias"] = r(Dm) * 0.5 - 2
    return x


def step_chain(state0, tokens, x, G, H, softplus):
    """selective_state_update_ref token by token from state0 (N, Dm, Ns): ys (S, N, Dm) and the
    final state. tokens: S dicts of u, delta, z (N, Dm), Bm, Cm (N, (G,) Ns). Grouped B, C go
    through its heads form (H heads of P channels: channel h * P + p, as weft's consecutive groups)."""
    N, Dm, Ns = state0.shape
    P = Dm // H
    hv = lambda t: t.reshape(*t.shape[:-1], H, P) if G else t  # (.., Dm) -> (.., H, P)
    state = state0.clone().reshape(N, H, P, Ns) if G else state0.clone()
    A = x["A"].reshape(H, P, Ns) if G else x["A"]
    ys = []
    for tok in tokens:
        y = selective_state_update_ref(
            state, hv(tok["u"]), hv(tok["delta"]), A, tok["Bm"], tok["Cm"],
            D=hv(x["D"]) if "D" in x else None, z=hv(tok["z"]) if "z" in tok else None,
            dt_bias=hv(x["bias"]) if "bias" in x else None, dt_softplus=softplus)
        ys.append(y.reshape(N, Dm))
    return (torch.stack(ys) if ys else torch.zeros(0, N, Dm, dtype=state0.dtype)), state.reshape(N, Dm, Ns)


def step_reference(x, c):
    S, N, Dm, Ns, G = c["dims"]
    toks = [{k: x[k][s] for k in ("u", "delta", "z", "Bm", "Cm") if k in x} for s in range(S)]
    y, h = step_chain(x["state0"], toks, x, G, c.get("heads", 1), bool(c.get("softplus")))
    return {"y": y, "h1": h}


def scan_chain_reference(x, c):
    """A scan from initial states (selective_scan_ref has none): selective_state_update_ref
    chained over each sequence's tokens, fp64 (mamba's layout in and out)."""
    B, T, Dm, Ns, G = c["dims"]
    cu = c.get("cu") or [0, T]
    ys, hs = [], []
    for n in range(B if c.get("cu") is None else len(cu) - 1):
        b, (t0, t1) = (n, (0, T)) if c.get("cu") is None else (0, (cu[n], cu[n + 1]))
        toks = [{k: x[k][b : b + 1, ..., t] for k in ("u", "delta", "z", "Bm", "Cm") if k in x} for t in range(t0, t1)]
        y, h = step_chain(x["h0"][n : n + 1], toks, x, G, G or 1, bool(c.get("softplus")))
        ys.append(y.permute(1, 2, 0))  # (S, 1, Dm) -> (1, Dm, S)
        hs.append(h)
    return {"y": torch.cat(ys, dim=0 if c.get("cu") is None else 2), "h1": torch.cat(hs, dim=0)}


def conv_inputs(c, gen):
    B, T, Dm, W = c["dims"]
    N = B if c.get("cu") is None else len(c["cu"]) - 1
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    x = {"x": r(B, Dm, T), "weight": r(Dm, W) / np.sqrt(W)}
    if c.get("bias"):
        x["bias"] = r(Dm)
    if c.get("init"):
        x["init"] = r(N, Dm, W - 1)
    return x


def conv_reference(x, c):
    """causal_conv1d_ref in fp64; varlen: its seq_idx, and causal_conv1d_varlen_states_ref."""
    act = "silu" if c.get("silu") else None
    if c.get("cu") is None:
        y, fin = causal_conv1d_ref(x["x"], x["weight"], x.get("bias"), initial_states=x.get("init"),
                                   return_final_states=True, activation=act)
        return {"y": y, "fin": fin}
    cu = c["cu"]
    T, W = x["x"].shape[2], x["weight"].shape[1]
    seq_idx = torch.zeros(1, T, dtype=torch.int32)
    for n, (a, b) in enumerate(zip(cu[:-1], cu[1:])):
        seq_idx[0, a:b] = n
    y = causal_conv1d_ref(x["x"], x["weight"], x.get("bias"), activation=act, seq_idx=seq_idx)
    # The states reference would assign states[i, :, -0:] for an empty sequence (a shape error):
    # it gets the non-empty sequences' offsets (the same tokens: empty ones hold none), and the
    # empty sequences zeros (no initial state).
    full = [n for n, (a, b) in enumerate(zip(cu[:-1], cu[1:])) if b > a]
    some = causal_conv1d_varlen_states_ref(x["x"][0].T, torch.tensor([0] + [cu[n + 1] for n in full]), W - 1)
    fin = torch.zeros(len(cu) - 1, x["x"].shape[1], W - 1, dtype=x["x"].dtype)
    fin[full] = some
    return {"y": y, "fin": fin}


def conv_step_inputs(c, gen):
    S, N, Dm, W = c["dims"]
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    x = {"state0": r(N, Dm, W - 1), "x": r(S, N, Dm), "weight": r(Dm, W) / np.sqrt(W)}
    if c.get("bias"):
        x["bias"] = r(Dm)
    return x


def conv_step_reference(x, c):
    state = x["state0"].clone()
    ys = [causal_conv1d_update_ref(x["x"][s], state, x["weight"], x.get("bias"),
                                   activation="silu" if c.get("silu") else None) for s in range(len(x["x"]))]
    return {"y": torch.stack(ys), "state1": state}


# ----- the ops: inputs, file kinds, gradients

KINDS = {"u": "tok", "delta": "tok", "z": "tok", "dy": "tok", "x": "tok", "Bm": "bc", "Cm": "bc", "y": "tok",
         "du": "tok", "ddelta": "tok", "dz": "tok", "dx": "tok", "dB": "bc", "dC": "bc"}
FLAGS = ("D", "z", "bias", "softplus", "silu", "init", "final", "cm", "grad")


def gradients(x, ref_fn, c, outs, gen, dtype):
    """Upstream gradients for `outs` and autograd's gradients of L = sum(out * d out)."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    ref = ref_fn(leaves, c)
    up = {k: torch.randn(*ref[k].shape, generator=gen, dtype=dtype) for k in outs}
    loss = sum((ref[k].double() * up[k].double()).sum() for k in outs)
    gs = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return up, {k: (g if g is not None else torch.zeros_like(leaves[k])).detach() for k, g in zip(leaves, gs)}


def prepare(c, gen):
    """(inputs to write, expected {run prefix: {name: (tensor in mamba's order, kind, bound)}})."""
    op, cm = c["op"], bool(c.get("cm"))
    if op == "scan" and c.get("init"):  # forward only: the chained step reference is in-place
        B, T, Dm, Ns, G = c["dims"]
        x = scan_inputs(c, gen, torch.float64)
        x["h0"] = torch.randn(B if c.get("cu") is None else len(c["cu"]) - 1, Dm, Ns, generator=gen,
                              dtype=torch.float64)
        files, want = x, {"fwd": {k: (v, "fp64") for k, v in scan_chain_reference(x, c).items()}}
    elif op == "scan":
        x = scan_inputs(c, gen)
        with torch.no_grad():
            ref = scan_reference(x, c)
        up, g = gradients(x, scan_reference, c, ("y", "h1"), gen, torch.float32)
        files = {**x, "dy": up["y"], "dhT": up["h1"]}
        names = {"u": "du", "delta": "ddelta", "A": "dA", "Bm": "dB", "Cm": "dC", "D": "dD", "z": "dz",
                 "bias": "dbias"}
        want = {"fwd": {k: (v, "fp32") for k, v in ref.items()},
                "bwd": {names[k]: (v, "fp32") for k, v in g.items()}}
    elif op == "scan_step":
        x = step_inputs(c, gen)
        files, want = x, {"step": {k: (v, "fp64") for k, v in step_reference(x, c).items()}}
    elif op == "conv":
        x = conv_inputs(c, gen)
        with torch.no_grad():
            ref = conv_reference(x, c)
        outs = ("y", "fin") if c.get("final") else ("y",)
        up, g = gradients(x, conv_reference, c, outs, gen, torch.float64)
        files = {**x, "dy": up["y"], **({"dfin": up["fin"]} if "fin" in up else {})}
        names = {"x": "dx", "weight": "dweight", "bias": "dbias", "init": "dinit"}
        want = {"fwd": {k: (v, "fp64") for k, v in ref.items() if k in outs},
                "bwd": {names[k]: (v, "fp64") for k, v in g.items()}}
    else:
        x = conv_step_inputs(c, gen)
        files, want = x, {"step": {k: (v, "fp64") for k, v in conv_step_reference(x, c).items()}}
    for k, v in files.items():
        if op in ("scan_step", "conv_step"):
            v = v.detach().contiguous().to(torch.float32).numpy()  # [S,N,...] / [N,...]: one layout
        else:
            v = to_file(v, KINDS.get(k), cm)
        v.astype("<f4").tofile(os.path.join(c["dir"], k + ".bin"))
    with open(os.path.join(c["dir"], "meta.txt"), "w") as f:
        f.write(f"op {op}\ndims {' '.join(str(d) for d in c['dims'])}\n")
        flags = [k for k in FLAGS if c.get(k)] + (["grad"] if "bwd" in want else [])
        f.write(f"flags {' '.join(flags)}\n")
        if c.get("cu") is not None:
            f.write("cu " + " ".join(str(v) for v in c["cu"]) + "\n")
    return want


def errors(got, ref):
    """(relative RMSE, max |diff| / max |ref|)."""
    ref = ref.detach().double().numpy().ravel()
    got = got.detach().numpy().ravel()
    if not ref.size:
        return 0.0, 0.0
    diff = got - ref
    scale = max(np.max(np.abs(ref)), 1e-30)
    return np.sqrt(np.mean(diff**2)) / max(np.sqrt(np.mean(ref**2)), 1e-30), np.max(np.abs(diff)) / scale


# ----- the cases

CASES = [
    # selective scan: dims B T Dm Ns G (G = 0: B, C shared by all channels)
    dict(op="scan", dims=(3, 1, 1, 1, 0), D=1),
    dict(op="scan", dims=(2, 65, 3, 16, 0)),
    dict(op="scan", dims=(2, 63, 64, 16, 0), D=1, z=1, bias=1, softplus=1, cm=1),
    dict(op="scan", dims=(1, 1000, 64, 16, 4), D=1, z=1, bias=1, softplus=1),
    dict(op="scan", dims=(1, 130, 48, 64, 3), z=1, softplus=1, cm=1),
    dict(op="scan", dims=(2, 40, 32, 16, 2), D=1, bias=1),
    dict(op="scan", dims=(1, 200, 32, 16, 0), D=1, z=1, bias=1, softplus=1, cu=[0, 0, 1, 70, 70, 200]),
    dict(op="scan", dims=(1, 120, 16, 16, 2), D=1, softplus=1, cm=1, cu=[0, 1, 119, 120]),
    dict(op="scan", dims=(1, 65, 1536, 16, 0), D=1, z=1, bias=1, softplus=1),
    # from initial states: against selective_state_update_ref chained over the tokens (forward)
    dict(op="scan", dims=(2, 63, 64, 16, 0), init=1, D=1, z=1, bias=1, softplus=1, cm=1),
    dict(op="scan", dims=(1, 65, 48, 16, 3), init=1, D=1, softplus=1),
    dict(op="scan", dims=(1, 130, 32, 16, 2), init=1, D=1, z=1, bias=1, softplus=1, cu=[0, 0, 1, 64, 130]),
    # decode step: dims S N Dm Ns G; grouped as mamba's heads form (heads = H)
    dict(op="scan_step", dims=(4, 3, 64, 16, 0), D=1, z=1, bias=1, softplus=1),
    dict(op="scan_step", dims=(3, 2, 48, 16, 3), heads=6, D=1, z=1, bias=1, softplus=1),
    dict(op="scan_step", dims=(2, 1, 5, 3, 0)),
    # causal conv1d: dims B T Dm W
    dict(op="conv", dims=(2, 65, 3, 4), silu=1, bias=1, final=1),
    dict(op="conv", dims=(2, 63, 64, 4), init=1, final=1, cm=1),
    dict(op="conv", dims=(1, 2, 64, 4), silu=1, bias=1, init=1, final=1),
    dict(op="conv", dims=(2, 1000, 36, 3), silu=1, bias=1, init=1, final=1),
    dict(op="conv", dims=(3, 1, 1, 2), bias=1),
    dict(op="conv", dims=(1, 100, 20, 6), silu=1, bias=1, init=1, final=1, cm=1),
    dict(op="conv", dims=(1, 200, 32, 4), silu=1, bias=1, final=1, cu=[0, 0, 1, 70, 70, 200]),
    dict(op="conv", dims=(1, 65, 1536, 4), silu=1, bias=1),
    # causal_conv1d_update: dims S N Dm W
    dict(op="conv_step", dims=(5, 3, 64, 4), silu=1, bias=1),
    dict(op="conv_step", dims=(3, 2, 5, 2)),
    dict(op="conv_step", dims=(4, 2, 20, 6), silu=1, bias=1),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", required=True, help="path of the ssm_xcheck executable")
    ap.add_argument("--work", help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(20261207)
    failures, checked = 0, 0
    worst = {}  # (op, output) -> [rel RMSE, max rel, bound name, cases]
    with tempfile.TemporaryDirectory() as tmp:
        for idx, c in enumerate(CASES):
            c = dict(c, dir=os.path.join(args.work or tmp, f"case{idx}"))
            os.makedirs(c["dir"], exist_ok=True)
            want = prepare(c, gen)
            out = subprocess.run([args.cli, c["dir"]], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"FAIL case {idx} {c['op']} {c['dims']}: ssm_xcheck exit {out.returncode}: {out.stderr.strip()}")
                failures += 1
                continue
            runs = [r for r in out.stdout.split() if RUN.match(r)]  # (Kokkos may warn on stdout)
            bad = failures
            for prefix, outputs in want.items():
                got_runs = [r for r in runs if r.startswith(prefix + "-")]
                if len(got_runs) != 1:
                    failures += 1
                    print(f"MISSING case {idx}: ssm_xcheck reported {runs}, no single {prefix}-* run")
                    continue
                run = got_runs[0]
                for name, (ref, bound) in outputs.items():
                    path = os.path.join(c["dir"], f"{name}.{run}.bin")
                    if not os.path.exists(path):
                        failures += 1
                        print(f"MISSING case {idx} {c['op']} {c['dims']}: {name}.{run}.bin")
                        continue
                    kind = KINDS.get(name) if c["op"] in ("scan", "conv") else None
                    got = from_file(np.fromfile(path, dtype="<f4"), tuple(ref.shape), kind, bool(c.get("cm")))
                    rel, mx = errors(got, ref)
                    checked += 1
                    ok = bool(torch.isfinite(got).all()) and rel <= BOUNDS[bound][0] and mx <= BOUNDS[bound][1]
                    if not ok:
                        failures += 1
                        print(f"MISMATCH case {idx} {c['op']} {c['dims']} {run} {name}: rel RMSE {rel:.2e}, "
                              f"max |diff|/max|ref| {mx:.2e} (bounds {BOUNDS[bound]})")
                    op = c["op"] + ("-bwd" if prefix == "bwd" else "-h0" if c.get("init") and c["op"] == "scan" else "")
                    w = worst.setdefault((op, name, bound), [0.0, 0.0, 0])
                    w[0], w[1], w[2] = max(w[0], rel), max(w[1], mx), w[2] + 1
            flags = ",".join(k for k in FLAGS if c.get(k))
            print(f"{c['op']:9s} dims={c['dims']} {flags or '-'} cu={c.get('cu')}: "
                  f"{' '.join(runs)} {'agree' if failures == bad else 'DIFFER'}")
    print(f"\n{'op':10s} {'output':8s} {'cases':>5s} {'max rel RMSE':>13s} {'max |d|/max|ref|':>17s}  "
          "reference / bounds")
    for (op, name, bound), (rel, mx, n) in worst.items():
        print(f"{op:10s} {name:8s} {n:5d} {rel:13.2e} {mx:17.2e}  {bound} {BOUNDS[bound]}")
    print(f"{checked} comparisons, {failures} failures")
    minimum = sum(1 + (c["op"] in ("scan", "conv")) for c in CASES)  # at least one output per run
    if checked < minimum:
        print(f"FAIL: {checked} comparisons, fewer than {minimum}")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
