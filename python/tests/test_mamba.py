"""weft_torch.mamba against float64 loops of the defining math (oracle.py), mamba_ssm's and
causal-conv1d's own reference functions (when installed; loaded by tests/xcheck/mamba_refs.py),
gradcheck and autograd of the fp64 loops."""
import os
import sys

import pytest
import torch

import oracle
from weft_torch.mamba import causal_conv1d_fn, causal_conv1d_update, selective_scan_fn, selective_state_update

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "xcheck"))
try:
    import mamba_refs

    selective_scan_ref, selective_state_update_ref, causal_conv1d_ref, causal_conv1d_update_ref = mamba_refs.load(
        "selective_scan_ref", "selective_state_update_ref", "causal_conv1d_ref", "causal_conv1d_update_ref")
except ImportError as e:  # optional peers: mamba-ssm and causal-conv1d without their CUDA builds
    selective_scan_ref = selective_state_update_ref = causal_conv1d_ref = causal_conv1d_update_ref = None
needs_refs = pytest.mark.skipif(selective_scan_ref is None, reason="mamba-ssm / causal-conv1d references absent")


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def scan_inputs(Bt, Dm, T, Ns, G=0, dtype=torch.float32, D=False, z=False, bias=False, softplus=False, h0=False,
                channel_last=False):
    """mamba-layout inputs; channel_last: u, delta, z hold [B,L,D] memory (transposed views)."""
    def tok():
        t = torch.randn(Bt, T, Dm, dtype=dtype)
        return t.transpose(1, 2) if channel_last else t.transpose(1, 2).contiguous()

    a = dict(u=tok(), A=-torch.rand(Dm, Ns, dtype=dtype) - 0.1)
    a["delta"] = tok() * 0.5 if softplus else (0.02 + 0.2 * torch.rand(Bt, T, Dm, dtype=dtype)).transpose(1, 2)
    shape = (Bt, G, Ns, T) if G else (Bt, Ns, T)
    a["B"], a["C"] = torch.randn(*shape, dtype=dtype), torch.randn(*shape, dtype=dtype)
    if D:
        a["D"] = torch.randn(Dm, dtype=dtype)
    if z:
        a["z"] = tok()
    if bias:
        a["delta_bias"] = torch.randn(Dm, dtype=dtype) * 0.3
    if softplus:
        a["delta_softplus"] = True
    if h0:
        a["initial_state"] = torch.randn(Bt, Dm, Ns, dtype=dtype)
    return a


def oracle_scan(a):
    return oracle.selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a.get("D"), a.get("z"),
                                 a.get("delta_bias"), a.get("delta_softplus", False), a.get("initial_state"))


SCAN_CASES = [
    dict(Bt=1, Dm=1, T=1, Ns=1),
    dict(Bt=2, Dm=3, T=65, Ns=16, D=True, z=True),
    dict(Bt=1, Dm=64, T=63, Ns=16, G=4, bias=True, softplus=True),
    dict(Bt=2, Dm=37, T=100, Ns=5, G=1, D=True, h0=True, channel_last=True),
    dict(Bt=1, Dm=130, T=33, Ns=64, D=True, z=True, bias=True, softplus=True, h0=True, channel_last=True),
]


@pytest.mark.parametrize("case", SCAN_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_scan_matches_fp64(case):
    a = scan_inputs(**case)
    y, last = selective_scan_fn(**a, return_last_state=True)
    ry, rlast = oracle_scan(a)
    assert y.dtype == torch.float32 and y.shape == ry.shape and last.shape == rlast.shape
    assert rel_err(y, ry) < 2e-5
    assert rel_err(last, rlast) < 2e-5


def test_scan_output_layout_follows_input():
    a = scan_inputs(2, 8, 9, 4)
    assert selective_scan_fn(**a).is_contiguous()  # mamba's [B,D,L] in, [B,D,L] out
    b = scan_inputs(2, 8, 9, 4, channel_last=True)
    assert selective_scan_fn(**b).transpose(1, 2).is_contiguous()  # [B,L,D] memory in, out


@needs_refs
@pytest.mark.parametrize("case", SCAN_CASES[1:], ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_scan_against_mamba_ref(case):
    case = {k: v for k, v in case.items() if k != "h0"}  # selective_scan_ref has no initial state
    a = scan_inputs(**case)
    y, last = selective_scan_fn(**a, return_last_state=True)
    ry, rlast = selective_scan_ref(**a, return_last_state=True)
    assert rel_err(y, ry) < 2e-5 and rel_err(last, rlast) < 2e-5


def test_scan_gradcheck_fp64():
    a = scan_inputs(2, 4, 6, 3, G=2, dtype=torch.float64, D=True, z=True, bias=True, softplus=True, h0=True)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]

    def f(*xs):
        kw = dict(a, **dict(zip(names, xs)))
        return selective_scan_fn(**kw, return_last_state=True)

    assert torch.autograd.gradcheck(f, [a[n].detach().clone().requires_grad_() for n in names])


@pytest.mark.parametrize("channel_last", [False, True])
def test_scan_grads_against_fp64_autograd(channel_last):
    a = scan_inputs(2, 40, 50, 16, G=2, D=True, z=True, bias=True, softplus=True, h0=True, channel_last=channel_last)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
    dy, dh = torch.randn(2, 40, 50), torch.randn(2, 40, 16)
    x32 = {n: a[n].detach().clone().requires_grad_() for n in names}
    y, last = selective_scan_fn(**dict(a, **x32), return_last_state=True)
    ((y * dy).sum() + (last * dh).sum()).backward()
    x64 = {n: a[n].detach().double().requires_grad_() for n in names}
    ry, rlast = oracle_scan(dict(a, **x64))
    ((ry * dy.double()).sum() + (rlast * dh.double()).sum()).backward()
    for n in names:
        assert x32[n].grad.dtype == torch.float32
        assert rel_err(x32[n].grad, x64[n].grad) < 1e-4, n


@needs_refs
def test_scan_grads_against_mamba_ref_autograd():
    a = scan_inputs(1, 24, 40, 16, G=3, D=True, z=True, bias=True, softplus=True)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    dy = torch.randn(1, 24, 40)
    grads = []
    for f in (selective_scan_fn, selective_scan_ref):
        x = {n: a[n].detach().clone().requires_grad_() for n in names}
        (f(**dict(a, **x)) * dy).sum().backward()
        grads.append(x)
    for n in names:
        assert rel_err(grads[0][n].grad, grads[1][n].grad) < 1e-4, n


def test_scan_varlen_equals_separate_calls():
    lens = [5, 0, 1, 17, 0, 9]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    Dm, Ns, T = 12, 8, sum(lens)
    a = scan_inputs(1, Dm, T, Ns, G=2, D=True, z=True, bias=True, softplus=True)
    h0 = torch.randn(len(lens), Dm, Ns)
    y, last = selective_scan_fn(**a, return_last_state=True, initial_state=h0, cu_seqlens=cu)
    for s, (b, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        part = {k: (v[..., b:e] if k in ("u", "delta", "z", "B", "C") else v) for k, v in a.items()}
        ry, rlast = oracle_scan(dict(part, initial_state=h0[s:s + 1]))
        if e > b:
            assert rel_err(y[..., b:e], ry) < 2e-5
        assert rel_err(last[s:s + 1], rlast) < 2e-5  # an empty sequence passes its initial state on


@pytest.mark.parametrize("heads", [False, True])
def test_state_update_prefill_then_steps(heads):
    """A prompt scanned with its last state, then tokens one at a time: equals one pass."""
    Bt, H, P, Ns, T, T0 = 2, 4, 6, 8, 12, 7
    G = 2 if heads else 1  # mamba's step groups heads; without heads it takes one group
    Dm = H * P
    a = scan_inputs(Bt, Dm, T, Ns, G=G, D=True, z=True, bias=True, softplus=True)
    ry, _ = oracle_scan(a)
    pre = {k: (v[..., :T0] if k in ("u", "delta", "z", "B", "C") else v) for k, v in a.items()}
    _, state = selective_scan_fn(**pre, return_last_state=True)
    state = state.view(Bt, H, P, Ns).clone() if heads else state.clone()
    hv = (lambda t: t.reshape(Bt, H, P)) if heads else (lambda t: t)
    pv = (lambda t: t.reshape(H, P, *t.shape[1:])) if heads else (lambda t: t)
    step = lambda f, st, t: f(st, hv(a["u"][..., t]), hv(a["delta"][..., t]), pv(a["A"]), a["B"][..., t],  # noqa: E731
                              a["C"][..., t], D=pv(a["D"]), z=hv(a["z"][..., t]), dt_bias=pv(a["delta_bias"]),
                              dt_softplus=True)
    if selective_state_update_ref is not None:  # mamba's own step from the same state
        ref_state = state.clone()
        ref_y = step(selective_state_update_ref, ref_state, T0)
    for t in range(T0, T):
        y = step(selective_state_update, state, t)
        assert rel_err(y.reshape(Bt, Dm), ry[..., t]) < 2e-5
        if t == T0 and selective_state_update_ref is not None:
            assert rel_err(y, ref_y) < 2e-6 and rel_err(state, ref_state) < 2e-6


def conv_inputs(Bt, Dm, T, W, dtype=torch.float32, bias=True, h0=False, channel_last=False):
    x = torch.randn(Bt, T, Dm, dtype=dtype).transpose(1, 2)
    a = dict(x=x if channel_last else x.contiguous(), weight=torch.randn(Dm, W, dtype=dtype))
    if bias:
        a["bias"] = torch.randn(Dm, dtype=dtype)
    if h0:
        a["initial_states"] = torch.randn(Bt, Dm, W - 1, dtype=dtype)
    return a


CONV_CASES = [
    dict(Bt=1, Dm=1, T=1, W=4),
    dict(Bt=2, Dm=3, T=65, W=2, bias=False),
    dict(Bt=2, Dm=64, T=63, W=4, h0=True),
    dict(Bt=1, Dm=37, T=100, W=3, h0=True, channel_last=True),
    dict(Bt=2, Dm=130, T=7, W=6, h0=True, channel_last=True),
]


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_conv_matches_fp64(case, silu):
    a = conv_inputs(**case)
    y, final = causal_conv1d_fn(**a, return_final_states=True, activation="silu" if silu else None)
    ry, rfinal = oracle.causal_conv1d(a["x"], a["weight"], a.get("bias"), a.get("initial_states"), silu)
    assert y.shape == ry.shape and final.shape == rfinal.shape
    assert rel_err(y, ry) < 2e-6 and rel_err(final, rfinal) == 0.0
    assert y.stride() == a["x"].stride()  # the output keeps the input's memory layout


@needs_refs
@pytest.mark.parametrize("case", CONV_CASES[1:], ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_conv_against_causal_conv1d_ref(case):
    a = conv_inputs(**case, dtype=torch.float64)
    y, final = causal_conv1d_fn(**a, return_final_states=True, activation="silu")
    ry, rfinal = causal_conv1d_ref(**a, return_final_states=True, activation="silu")
    assert rel_err(y, ry) < 1e-13 and rel_err(final, rfinal) == 0.0


def test_conv_final_states_out():
    a = conv_inputs(2, 5, 9, 4)
    out = torch.full((2, 5, 3), 7.0)
    y, final = causal_conv1d_fn(**a, return_final_states=True, final_states_out=out)
    assert final is out and torch.equal(out, a["x"][..., -3:])


@pytest.mark.parametrize("silu", [False, True])
def test_conv_gradcheck_fp64(silu):
    a = conv_inputs(2, 3, 7, 4, dtype=torch.float64, h0=True)
    names = ["x", "weight", "bias", "initial_states"]

    def f(*xs):
        return causal_conv1d_fn(**dict(zip(names, xs)), return_final_states=True, activation="silu" if silu else None)

    assert torch.autograd.gradcheck(f, [a[n].detach().clone().requires_grad_() for n in names])


def test_conv_grads_against_fp64_autograd():
    a = conv_inputs(2, 40, 300, 4, h0=True, channel_last=True)
    names = ["x", "weight", "bias", "initial_states"]
    dy, dh = torch.randn(2, 40, 300), torch.randn(2, 40, 3)
    x32 = {n: a[n].detach().clone().requires_grad_() for n in names}
    y, fin = causal_conv1d_fn(**x32, return_final_states=True, activation="silu")
    ((y * dy).sum() + (fin * dh).sum()).backward()
    x64 = {n: a[n].detach().double().requires_grad_() for n in names}
    ry, rfin = oracle.causal_conv1d(x64["x"], x64["weight"], x64["bias"], x64["initial_states"], True)
    ((ry * dy.double()).sum() + (rfin * dh.double()).sum()).backward()
    for n in names:
        assert rel_err(x32[n].grad, x64[n].grad) < 1e-5, n


def test_conv_backward_any_layouts():
    """x and dy in each memory layout (time-major [B,D,L], channel-last, mixed: the binding then
    copies both to channel-last memory in tiles) give the same gradients as the fp64 definition."""
    Bt, Dm, T, W = 2, 70, 150, 4
    x64, w64, b64, dy64 = (torch.randn(Bt, Dm, T, dtype=torch.float64), torch.randn(Dm, W, dtype=torch.float64),
                           torch.randn(Dm, dtype=torch.float64), torch.randn(Bt, Dm, T, dtype=torch.float64))
    xr = x64.clone().requires_grad_()
    wr, br = w64.clone().requires_grad_(), b64.clone().requires_grad_()
    (oracle.causal_conv1d(xr, wr, br, None, True)[0] * dy64).sum().backward()
    layouts = {"time-major": lambda t: t.float().contiguous(),
               "channel-last": lambda t: t.float().transpose(1, 2).contiguous().transpose(1, 2)}
    for lx, fx in layouts.items():
        for ly, fy in layouts.items():
            x, dy = fx(x64).transpose(1, 2), fy(dy64).transpose(1, 2)  # weft's [B,L,D] views
            dx, dw, db, _ = torch.ops.weft.causal_conv1d_backward(x, w64.float(), b64.float(), dy, None, None, True,
                                                                  None, False)
            assert rel_err(dx.transpose(1, 2), xr.grad) < 1e-5, (lx, ly)
            assert rel_err(dw, wr.grad) < 1e-5 and rel_err(db, br.grad) < 1e-5, (lx, ly)


def test_conv_varlen_equals_separate_calls():
    lens = [4, 0, 1, 13, 2]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int64)
    a = conv_inputs(1, 9, sum(lens), 4)
    y, final = causal_conv1d_fn(**a, return_final_states=True, activation="silu", cu_seqlens=cu)
    for s, (b, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        ry, rfin = oracle.causal_conv1d(a["x"][..., b:e], a["weight"], a["bias"], None, True)
        if e > b:
            assert rel_err(y[..., b:e], ry) < 2e-6
        assert rel_err(final[s:s + 1], rfin) == 0.0 if e > b else final[s].abs().max() == 0


@pytest.mark.parametrize("tokens_per_call", [1, 3])
def test_conv_update_prefill_then_steps(tokens_per_call):
    a = conv_inputs(2, 16, 14, 4)
    ry, _ = oracle.causal_conv1d(a["x"], a["weight"], a["bias"], None, True)
    T0 = 5
    _, state = causal_conv1d_fn(a["x"][..., :T0], a["weight"], a["bias"], return_final_states=True, activation="silu")
    ref_state = state.clone().double()
    for t in range(T0, 14, tokens_per_call):
        xt = a["x"][..., t:t + tokens_per_call]
        y = causal_conv1d_update(xt if tokens_per_call > 1 else xt[..., 0], state, a["weight"], a["bias"], "silu")
        y = y if tokens_per_call > 1 else y[..., None]
        assert rel_err(y, ry[..., t:t + tokens_per_call]) < 2e-6
        if causal_conv1d_update_ref is not None:
            r = causal_conv1d_update_ref(xt.double(), ref_state, a["weight"].double(), a["bias"].double(), "silu")
            assert rel_err(y, r) < 2e-6 and rel_err(state, ref_state) == 0.0


def test_bad_input():
    a = scan_inputs(1, 6, 5, 4, G=4)  # 4 groups do not divide 6 channels
    with pytest.raises(ValueError, match="selective_scan.*Bm.*divides Dm = 6"):
        selective_scan_fn(**a)
    a = scan_inputs(1, 6, 5, 4)
    with pytest.raises(ValueError, match="selective_scan.*A"):
        selective_scan_fn(**dict(a, A=a["A"][:5]))
    bad = a["delta"].clone()
    bad[0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"delta\[0, 3, :\]"):
        selective_scan_fn(**dict(a, delta=bad))
    with pytest.raises(ValueError, match="complex A"):
        selective_scan_fn(**dict(a, A=a["A"].to(torch.complex64)))
    with pytest.raises(ValueError, match="time-invariant"):
        selective_scan_fn(**dict(a, B=torch.randn(6, 4)))
    with pytest.raises(TypeError, match="dtype"):
        selective_scan_fn(**dict(a, u=a["u"].to(torch.int32)))
    with pytest.raises(ValueError, match="cu_seqlens"):
        selective_scan_fn(**a, cu_seqlens=torch.tensor([0, 3, 2]))
    # Nothing written on error: the state of a failed step is unchanged.
    state = torch.randn(1, 6, 4)
    before = state.clone()
    with pytest.raises(ValueError, match="selective_scan_step"):
        selective_state_update(state, a["u"][..., 0], a["delta"][..., 0], a["A"][:, :3], a["B"][..., 0],
                               a["C"][..., 0])
    assert torch.equal(state, before)
    with pytest.raises(TypeError, match="state is updated in place"):
        selective_state_update(state.double(), a["u"][..., 0], a["delta"][..., 0], a["A"], a["B"][..., 0],
                               a["C"][..., 0])
    c = conv_inputs(1, 4, 6, 4)
    with pytest.raises(ValueError, match="seq_idx"):
        causal_conv1d_fn(**c, seq_idx=torch.zeros(1, 6, dtype=torch.int32))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_fn(**c, activation="relu")
    with pytest.raises(ValueError, match="causal_conv1d.*weight"):
        causal_conv1d_fn(c["x"], torch.randn(5, 4))
    with pytest.raises(ValueError, match="W-1 = 3"):
        causal_conv1d_update(c["x"][..., 0], torch.zeros(1, 4, 4), c["weight"])


def test_repeatable():
    a = scan_inputs(2, 70, 90, 16, G=2, D=True, z=True, softplus=True, bias=True)
    assert torch.equal(selective_scan_fn(**a), selective_scan_fn(**a))


def test_opcheck():
    a = scan_inputs(2, 6, 5, 4, G=2, D=True, z=True)
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    torch.library.opcheck(torch.ops.weft.selective_scan.default,
                          (t(a["u"]), t(a["delta"]), a["A"], a["B"].movedim(-1, 1), a["C"].movedim(-1, 1), a["D"],
                           t(a["z"]), None, False, None, True, None))
    c = conv_inputs(2, 5, 7, 4, h0=True)
    torch.library.opcheck(torch.ops.weft.causal_conv1d.default,
                          (t(c["x"]), c["weight"], c["bias"], c["initial_states"], True, True, None))
