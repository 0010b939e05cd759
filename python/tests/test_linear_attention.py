"""weft_torch's FLA-compatible linear attention against a float64 loop of the defining math,
against FLA's own torch references (when fla-core is installed), gradcheck, varlen, decode
steps, bad input and the operator registration (opcheck: schema, fake kernel, autograd)."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

import oracle
import weft_torch as wt

GATES = ["none", "scalar", "vector", "delta", "gated_delta", "mlstm"]
has_fla = importlib.util.find_spec("fla") is not None


def make(gate, B, T, H, K, V, dtype=torch.float32, sigmoid=False):
    q = torch.randn(B, T, H, K, dtype=dtype)
    k = torch.randn(B, T, H, K, dtype=dtype)
    v = torch.randn(B, T, H, V, dtype=dtype)
    kw = {}
    if gate in ("delta", "gated_delta"):
        k = F.normalize(k, dim=-1)  # the delta rules are stable with unit keys (FLA's layers normalise)
        kw["beta"] = torch.rand(B, T, H, dtype=dtype)
    if gate in ("scalar", "gated_delta"):
        kw["g"] = F.logsigmoid(torch.randn(B, T, H, dtype=dtype) + 2)
    if gate == "vector":
        kw["g"] = F.logsigmoid(torch.randn(B, T, H, K, dtype=dtype) + 2)
    if gate == "mlstm":
        kw["i"] = torch.randn(B, T, H, dtype=dtype)
        kw["f"] = torch.randn(B, T, H, dtype=dtype) + 3
    return q, k, v, kw


def call(gate, q, k, v, kw, recurrent=False, **extra):
    """torch.ops.weft.linear_attention through the FLA-named functions."""
    fn = {
        "none": (wt.chunk_linear_attn, wt.fused_recurrent_linear_attn),
        "scalar": (wt.chunk_simple_gla, wt.fused_recurrent_simple_gla),
        "vector": (wt.chunk_gla, wt.fused_recurrent_gla),
        "delta": (wt.chunk_delta_rule, wt.fused_recurrent_delta_rule),
        "gated_delta": (wt.chunk_gated_delta_rule, wt.fused_recurrent_gated_delta_rule),
        "mlstm": (wt.chunk_mlstm, wt.fused_recurrent_mlstm),
    }[gate][int(recurrent)]
    kw = dict(kw)
    if gate == "vector" and recurrent:
        kw["gk"] = kw.pop("g")
    if gate in ("delta", "gated_delta", "mlstm"):
        order = {"delta": ["beta"], "gated_delta": ["g", "beta"], "mlstm": ["i", "f"]}[gate]
        return fn(q, k, v, *[kw[n] for n in order], **extra)
    return fn(q, k, v, **kw, **extra)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("shape", [(2, 1, 1, 8, 8), (1, 63, 3, 16, 24), (2, 130, 2, 32, 16)])
def test_forward_matches_fp64_loop(gate, recurrent, shape):
    B, T, H, K, V = shape
    q, k, v, kw = make(gate, B, T, H, K, V)
    h0 = torch.randn(B, H, K, V) * 0.1
    init = (h0, torch.rand(B, H, K), torch.randn(B, H)) if gate == "mlstm" else h0
    o, state = call(gate, q, k, v, kw, recurrent, initial_state=init, output_final_state=True, scale=0.3)
    oo, So, no, mo = oracle.linear_attention(gate, q, k, v, scale=0.3, h0=h0,
                                             n0=init[1] if gate == "mlstm" else None,
                                             m0=init[2] if gate == "mlstm" else None, **kw)
    tol = dict(rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(o.double(), oo, **tol)
    if gate == "mlstm":
        torch.testing.assert_close(state[0].double(), So, **tol)
        torch.testing.assert_close(state[1].double(), no, **tol)
        torch.testing.assert_close(state[2].double(), mo, **tol)
    else:
        assert state.dtype == torch.float32 and state.shape == (B, H, K, V)
        torch.testing.assert_close(state.double(), So, **tol)


@pytest.mark.skipif(not has_fla, reason="fla-core not installed")
@pytest.mark.parametrize("T", [1, 64, 100])
def test_against_fla_references(T):
    from fla.ops.delta_rule.naive import delta_rule_recurrence
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
    from fla.ops.gla.naive import naive_recurrent_gla
    from fla.ops.linear_attn.naive import naive_recurrent_linear_attn
    from fla.ops.simple_gla.naive import naive_recurrent_simple_gla

    B, H, K, V = 2, 3, 32, 16
    tol = dict(rtol=1e-4, atol=1e-4)
    h0 = torch.randn(B, H, K, V) * 0.1

    q, k, v, kw = make("scalar", B, T, H, K, V)
    ref_o, ref_h = naive_recurrent_simple_gla(q, k, v, kw["g"], initial_state=h0, output_final_state=True)
    o, h = wt.chunk_simple_gla(q, k, v, g=kw["g"], initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o, **tol)
    torch.testing.assert_close(h, ref_h, **tol)

    q, k, v, kw = make("vector", B, T, H, K, V)
    ref_o, ref_h = naive_recurrent_gla(q, k, v, kw["g"], initial_state=h0, output_final_state=True)
    o, h = wt.chunk_gla(q, k, v, kw["g"], initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o, **tol)
    torch.testing.assert_close(h, ref_h, **tol)

    q, k, v, kw = make("gated_delta", B, T, H, K, V)
    ref_o, ref_h = naive_recurrent_gated_delta_rule(q, k, v, kw["beta"], kw["g"], initial_state=h0,
                                                    output_final_state=True)
    o, h = wt.chunk_gated_delta_rule(q, k, v, kw["g"], kw["beta"], initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o, **tol)
    torch.testing.assert_close(h, ref_h, **tol)

    q, k, v, kw = make("delta", B, T, H, K, V)
    # FLA's delta_rule_recurrence takes [B,H,T,K] and scales q by K^-1/2 itself
    ref_o, ref_h = delta_rule_recurrence(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         kw["beta"].transpose(1, 2), initial_state=h0)
    o, h = wt.chunk_delta_rule(q, k, v, kw["beta"], initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o.transpose(1, 2), **tol)
    torch.testing.assert_close(h, ref_h, **tol)

    q, k, v, _ = make("none", B, T, H, K, V)
    ref_o, ref_h = naive_recurrent_linear_attn(q, k, v, initial_state=h0, output_final_state=True)
    o, h = wt.chunk_linear_attn(q, k, v, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o, **tol)
    torch.testing.assert_close(h, ref_h, **tol)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("recurrent", [False, True])
def test_gradcheck_fp64(gate, recurrent):
    # T = 37 crosses two chunk boundaries at chunk_size 16; states given (as constants: they are fp32).
    B, T, H, K, V = 2, 37, 2, 4, 3
    q, k, v, kw = make(gate, B, T, H, K, V, dtype=torch.float64)
    h0 = torch.randn(B, H, K, V) * 0.1
    init = (h0, torch.rand(B, H, K), torch.zeros(B, H)) if gate == "mlstm" else h0
    names = list(kw)
    extra = dict(chunk_size=16) if not recurrent else {}

    def f(q, k, v, *gates):
        o, state = call(gate, q, k, v, dict(zip(names, gates)), recurrent, initial_state=init, **extra)
        return o

    args = [x.requires_grad_() for x in (q, k, v, *kw.values())]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("gate", GATES)
def test_state_gradients_against_fp64_loop(gate):
    # dL/dh0 through o and the final state, against autograd of the fp64 loop (states are fp32).
    B, T, H, K, V = 2, 40, 2, 8, 5
    q, k, v, kw = make(gate, B, T, H, K, V)
    h0 = (torch.randn(B, H, K, V) * 0.1).requires_grad_()
    n0 = torch.rand(B, H, K).requires_grad_()
    m0 = torch.randn(B, H).requires_grad_()
    init = (h0, n0, m0) if gate == "mlstm" else h0
    o, state = call(gate, q, k, v, kw, False, initial_state=init, output_final_state=True, chunk_size=16)
    do, dS = torch.randn_like(o), torch.randn(B, H, K, V)
    hT = state[0] if gate == "mlstm" else state
    torch.autograd.backward([o, hT], [do, dS])
    got = [h0.grad.clone()] + ([n0.grad.clone(), m0.grad.clone()] if gate == "mlstm" else [])
    for t in (h0, n0, m0):
        t.grad = None
    oo, So, _, _ = oracle.linear_attention(gate, q, k, v, h0=h0, n0=n0 if gate == "mlstm" else None,
                                           m0=m0 if gate == "mlstm" else None, **kw)
    torch.autograd.backward([oo, So], [do.double(), dS.double()])
    want = [h0.grad] + ([n0.grad, m0.grad] if gate == "mlstm" else [])
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("gate", ["scalar", "vector", "gated_delta", "mlstm"])
def test_varlen_equals_separate_sequences(gate):
    lens = [5, 0, 70, 1, 33]  # an empty and a one-token sequence among them
    H, K, V = 2, 16, 8
    T = sum(lens)
    q, k, v, kw = make(gate, 1, T, H, K, V)
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int64)
    N = len(lens)
    h0 = torch.randn(N, H, K, V) * 0.1
    init = (h0, torch.rand(N, H, K), torch.randn(N, H)) if gate == "mlstm" else h0
    o, state = call(gate, q, k, v, kw, False, initial_state=init, output_final_state=True, cu_seqlens=cu)
    for s in range(N):
        a, b = int(cu[s]), int(cu[s + 1])
        sl = lambda x: x[:, a:b]  # noqa: E731
        init_s = tuple(x[s:s + 1] for x in init) if gate == "mlstm" else h0[s:s + 1]
        o_s, st_s = call(gate, sl(q), sl(k), sl(v), {n: sl(x) for n, x in kw.items()}, False,
                         initial_state=init_s, output_final_state=True)
        torch.testing.assert_close(o[:, a:b], o_s, rtol=1e-5, atol=1e-5)
        hT, hT_s = (state[0], st_s[0]) if gate == "mlstm" else (state, st_s)
        torch.testing.assert_close(hT[s:s + 1], hT_s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gate", GATES)
def test_decode_steps_continue_prefill(gate):
    B, T, H, K, V = 2, 50, 2, 16, 8
    q, k, v, kw = make(gate, B, T, H, K, V)
    o_all, _ = call(gate, q, k, v, kw, False)
    P = 40
    pre = lambda x: x[:, :P]  # noqa: E731
    _, st = call(gate, pre(q), pre(k), pre(v), {n: pre(x) for n, x in kw.items()}, False, output_final_state=True)
    kind = {"none": "linear_attn", "scalar": "simple_gla", "vector": "gla", "delta": "delta_rule",
            "gated_delta": "gated_delta_rule", "mlstm": "mlstm"}[gate]
    state = st[0] if gate == "mlstm" else st
    extra = dict(normalizer=st[1], stabilizer=st[2]) if gate == "mlstm" else {}
    for t in range(P, T):
        one = lambda x: x[:, t:t + 1]  # noqa: E731
        o_t = wt.linear_attention_step(kind, one(q), one(k), one(v), state, **{n: one(x) for n, x in kw.items()},
                                       **extra)
        torch.testing.assert_close(o_t, o_all[:, t:t + 1], rtol=1e-4, atol=1e-4)


def test_non_contiguous_inputs_are_handled():
    B, T, H, K, V = 2, 33, 3, 16, 8
    q, k, v, kw = make("vector", B, T, H, K, V)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not qt.is_contiguous()
    o1, _ = wt.chunk_gla(q, k, v, kw["g"])
    o2, _ = wt.chunk_gla(qt, k, v, kw["g"][:, :, :, :])
    assert torch.equal(o1, o2)


def test_state_v_first_and_g_gamma():
    B, T, H, K, V = 1, 20, 2, 8, 4
    q, k, v, _ = make("none", B, T, H, K, V)
    gamma = torch.log(torch.tensor([0.9, 0.5]))
    h0 = torch.randn(B, H, K, V)
    o1, h1 = wt.chunk_simple_gla(q, k, v, g_gamma=gamma, initial_state=h0, output_final_state=True)
    o2, h2 = wt.chunk_simple_gla(q, k, v, g=gamma.expand(B, T, H), initial_state=h0.transpose(-1, -2),
                                 output_final_state=True, state_v_first=True)
    assert torch.equal(o1, o2)
    assert torch.equal(h1, h2.transpose(-1, -2))


def test_deterministic():
    q, k, v, kw = make("gated_delta", 2, 300, 4, 32, 32)
    a = wt.chunk_gated_delta_rule(q, k, v, kw["g"], kw["beta"], output_final_state=True)
    b = wt.chunk_gated_delta_rule(q, k, v, kw["g"], kw["beta"], output_final_state=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_shapes_raise_value_error_with_weft_message():
    q, k, v, kw = make("vector", 1, 10, 2, 8, 4)
    with pytest.raises(ValueError, match="g"):
        wt.chunk_gla(q, k, v, kw["g"][:, :, :, :4])  # g's K does not match q's
    with pytest.raises(ValueError, match="4 dimensions"):
        wt.chunk_gla(q[0], k, v, kw["g"])
    with pytest.raises(ValueError, match="k"):
        wt.chunk_gla(q, k[:, :9], v, kw["g"])
    with pytest.raises(ValueError, match="chunk_size"):
        wt.chunk_gla(q, k, v, kw["g"], chunk_size=48)
    with pytest.raises(ValueError, match="cu_seqlens"):
        wt.chunk_gla(q, k, v, kw["g"], cu_seqlens=torch.tensor([0, 4, 3, 10]))
    with pytest.raises(ValueError, match="initial_state"):
        wt.chunk_gla(q, k, v, kw["g"], initial_state=torch.zeros(1, 2, 4, 8))


def test_bad_values_raise_value_error_naming_position():
    q, k, v, kw = make("scalar", 1, 10, 2, 8, 4)
    g = kw["g"].clone()
    g[0, 7, 1] = float("nan")
    with pytest.raises(ValueError, match="g") as e:
        wt.chunk_simple_gla(q, k, v, g=g)
    assert "7" in str(e.value)


def test_wrong_dtype_and_device():
    q, k, v, kw = make("scalar", 1, 10, 2, 8, 4)
    with pytest.raises(TypeError, match="BFloat16"):
        wt.chunk_simple_gla(q.bfloat16(), k.bfloat16(), v.bfloat16(), g=kw["g"])
    with pytest.raises(TypeError, match="one dtype"):
        wt.chunk_simple_gla(q.double(), k, v, g=kw["g"])
    # meta tensors take the fake kernel (shapes only), as torch.compile's tracing does
    o, h = wt.chunk_simple_gla(q.to("meta"), k.to("meta"), v.to("meta"), g=kw["g"].to("meta"),
                               output_final_state=True)
    assert o.device.type == "meta" and o.shape == (1, 10, 2, 4) and h.shape == (1, 2, 8, 4)
    with pytest.raises(TypeError, match="float32"):
        wt.linear_attention_step("simple_gla", q[:, :1], k[:, :1], v[:, :1], torch.zeros(1, 2, 8, 4).double(),
                                 g=kw["g"][:, :1])
    with pytest.raises(TypeError, match="unsupported argument"):
        wt.chunk_simple_gla(q, k, v, g=kw["g"], no_such_option=1)


def test_nothing_written_on_error():
    q, k, v, kw = make("scalar", 1, 1, 2, 8, 4)
    state = torch.randn(1, 2, 8, 4)
    before = state.clone()
    g = kw["g"].clone()
    g[0, 0, 1] = float("inf")  # a log decay > 0 is invalid
    with pytest.raises(ValueError):
        wt.linear_attention_step("simple_gla", q, k, v, state, g=g)
    assert torch.equal(state, before)


# ---- registration --------------------------------------------------------------------------------------


@pytest.mark.parametrize("gate", ["vector", "mlstm"])
def test_opcheck(gate):
    q, k, v, kw = make(gate, 1, 20, 2, 8, 4, dtype=torch.float64)
    for x in (q, k, v, *kw.values()):
        x.requires_grad_()
    args = (q, k, v, gate, kw.get("g"), kw.get("beta"), kw.get("i"), kw.get("f"), None, None, None, None, True,
            None, False, 16, False)
    torch.library.opcheck(torch.ops.weft.linear_attention.default, args)


def test_torch_compile_traces_the_op():
    q, k, v, kw = make("vector", 1, 20, 2, 8, 4)

    def layer(q, k, v, g):
        o, _ = wt.chunk_gla(q, k, v, g)
        return o.sum(-1)

    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, kw["g"]), layer(q, k, v, kw["g"]))


def test_fla_in_kernel_options():
    # use_qk_l2norm_in_kernel: q, k divided by sqrt(sum x^2 + 1e-6); use_beta_sigmoid_in_kernel with
    # allow_neg_eigval: beta = 2 sigmoid(beta) (FLA's fused_beta_sigmoid with scale 2)
    B, T, H, K, V = 1, 30, 2, 8, 4
    q, k, v, kw = make("gated_delta", B, T, H, K, V)
    k = torch.randn(B, T, H, K)
    raw_beta = torch.randn(B, T, H)
    o, _ = wt.chunk_gated_delta_rule(q, k, v, kw["g"], raw_beta, use_qk_l2norm_in_kernel=True,
                                     use_beta_sigmoid_in_kernel=True, allow_neg_eigval=True)
    n = lambda x: x.double() / torch.sqrt((x.double() ** 2).sum(-1, keepdim=True) + 1e-6)  # noqa: E731
    oo, _, _, _ = oracle.linear_attention("gated_delta", n(q), n(k), v, g=kw["g"],
                                          beta=2 * torch.sigmoid(raw_beta.double()))
    torch.testing.assert_close(o.double(), oo, rtol=2e-4, atol=2e-4)
