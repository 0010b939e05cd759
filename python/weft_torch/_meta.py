"""Fake (meta) kernels, so torch.compile / torch.export trace torch.ops.weft.*, and autograd
through weft's backward kernels."""
import torch

lib = "weft::"


def _n_seq(q, cu_seqlens):
    return q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1


# ---- linear attention ---------------------------------------------------------------------------


@torch.library.register_fake(lib + "linear_attention")
def _la_fake(q, k, v, gate, g, beta, i, f, scale, h0, n0, m0, output_final_state, cu_seqlens, recurrent,
             chunk_size, mlstm_sigmoid):
    B, T, H, K = q.shape
    V = v.shape[3]
    N = _n_seq(q, cu_seqlens)
    f32 = dict(dtype=torch.float32, device=q.device)
    o = q.new_empty((B, T, H, V))
    ml = gate == "mlstm"
    hT = q.new_empty((N, H, K, V), **f32) if output_final_state else q.new_empty((0,), **f32)
    nT = q.new_empty((N, H, K), **f32) if output_final_state and ml else q.new_empty((0,), **f32)
    mT = q.new_empty((N, H), **f32) if output_final_state and ml and not mlstm_sigmoid else q.new_empty((0,), **f32)
    return o, hT, nT, mT


@torch.library.register_fake(lib + "linear_attention_backward")
def _la_bwd_fake(q, k, v, do, gate, g, beta, i, f, scale, h0, n0, m0, dhT, dnT, dmT, cu_seqlens, chunk_size,
                 mlstm_sigmoid, need_d_initial):
    B, T, H, K = q.shape
    V = v.shape[3]
    N = _n_seq(q, cu_seqlens)
    f32 = dict(dtype=torch.float32, device=q.device)
    e = q.new_empty((0,))
    ml = gate == "mlstm"
    like = lambda t: q.new_empty(t.shape) if t is not None else e  # noqa: E731
    return (q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape), like(g), like(beta), like(i),
            like(f), q.new_empty((N, H, K, V) if need_d_initial else (0,), **f32),
            q.new_empty((N, H, K) if need_d_initial and ml else (0,), **f32),
            q.new_empty((N, H) if need_d_initial and ml and not mlstm_sigmoid else (0,), **f32))


@torch.library.register_fake(lib + "linear_attention_step")
def _la_step_fake(q, k, v, gate, g, beta, i, f, state, normalizer, stabilizer, scale, mlstm_sigmoid):
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))


def _la_setup(ctx, inputs, output):
    (q, k, v, gate, g, beta, i, f, scale, h0, n0, m0, _ofs, cu_seqlens, _rec, chunk_size, sig) = inputs
    ctx.save_for_backward(q, k, v, g, beta, i, f, h0, n0, m0, cu_seqlens)
    ctx.gate, ctx.scale, ctx.chunk_size, ctx.sig = gate, scale, chunk_size, sig


def _la_backward(ctx, do, dhT, dnT, dmT):
    q, k, v, g, beta, i, f, h0, n0, m0, cu_seqlens = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_d_initial = bool(need[9] or need[10] or need[11])
    present = lambda t: t if t is not None and t.numel() > 0 else None  # noqa: E731
    dq, dk, dv, dg, dbeta, di, df, dh0, dn0, dm0 = torch.ops.weft.linear_attention_backward(
        q, k, v, do, ctx.gate, g, beta, i, f, ctx.scale, h0, n0, m0, present(dhT), present(dnT), present(dmT),
        cu_seqlens, ctx.chunk_size, ctx.sig, need_d_initial)
    cast = lambda d, x: d.to(x.dtype) if x is not None and d.numel() > 0 else None  # noqa: E731
    return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, cast(dg, g), cast(dbeta, beta), cast(di, i),
            cast(df, f), None, cast(dh0, h0), cast(dn0, n0), cast(dm0, m0), None, None, None, None, None)


torch.library.register_autograd(lib + "linear_attention", _la_backward, setup_context=_la_setup)


# ---- sampling ---------------------------------------------------------------------------------


@torch.library.register_fake(lib + "sample")
def _sample_fake(x, probs, temperature, top_k, top_p, min_p, seed, offset, seeds, offsets):
    B = x.shape[0]
    return x.new_empty((B,), dtype=torch.int32), x.new_empty((B,), dtype=torch.bool)


@torch.library.register_fake(lib + "speculative_sample")
def _spec_fake(draft_probs, draft_tokens, target_probs, seed, offset, lengths):
    B, L = draft_tokens.shape
    return draft_probs.new_empty((B, L + 1), dtype=torch.int32), draft_probs.new_empty((B,), dtype=torch.int32)


@torch.library.register_fake(lib + "verify_greedy")
def _verify_fake(draft_tokens, target_logits, lengths):
    B, L = draft_tokens.shape
    return (target_logits.new_empty((B, L + 1), dtype=torch.int32),
            target_logits.new_empty((B,), dtype=torch.int32))


# ---- attention ------------------------------------------------------------------------------------


@torch.library.register_fake(lib + "attention")
def _attn_fake(q, k, v, scale, causal, wl, wr, softcap, cu_q, cu_k, q_offset, k_offset):
    B, Tq, H, _ = q.shape
    return q.new_empty((B, Tq, H, v.shape[3])), q.new_empty((B, H, Tq), dtype=torch.float32)


@torch.library.register_fake(lib + "attention_backward")
def _attn_bwd_fake(q, k, v, o, lse, do, scale, causal, wl, wr, softcap, cu_q, cu_k, q_offset, k_offset):
    return q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape)


def _attn_setup(ctx, inputs, output):
    q, k, v, scale, causal, wl, wr, softcap, cu_q, cu_k, q_offset, k_offset = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, cu_q, cu_k)
    ctx.args = (scale, causal, wl, wr, softcap)
    ctx.offsets = (q_offset, k_offset)
    ctx.set_materialize_grads(False)  # an unused lse gets None, not zeros: no dense lse term


def _lse_grad_dense(q, k, lse, dlse, scale, causal, wl, wr, softcap, q_offset, k_offset):
    """The part of dq, dk that flows through lse (d lse_i / d s_ij = p_ij), formed densely:
    O(Tq Tk) memory per head. Only used when a caller differentiates through lse (the
    kernels' backward takes the gradient of o alone)."""
    B, Tq, H, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    rep = H // Hkv
    kk = k.repeat_interleave(rep, 2)
    sc = D ** -0.5 if scale is None else scale
    raw = torch.einsum("bqhd,bkhd->bhqk", q, kk) * sc
    t = torch.tanh(raw / softcap) if softcap > 0 else None
    s = softcap * t if softcap > 0 else raw
    qi = torch.arange(Tq)[:, None] + q_offset
    kj = torch.arange(Tk)[None, :] + k_offset
    allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    if causal:
        allowed &= kj <= qi
    if wl >= 0:
        allowed &= kj >= qi - wl
    if wr >= 0:
        allowed &= kj <= qi + wr
    lse_ = lse.to(s.dtype)[..., None]
    p = torch.where(allowed & torch.isfinite(lse_), torch.exp(s - lse_), torch.zeros((), dtype=s.dtype))
    ds = p * dlse.to(s.dtype)[..., None]
    if softcap > 0:
        ds = ds * (1 - t * t)
    dq = torch.einsum("bhqk,bkhd->bqhd", ds, kk) * sc
    dk = (torch.einsum("bhqk,bqhd->bkhd", ds, q) * sc).reshape(B, Tk, Hkv, rep, D).sum(3)
    return dq, dk


def _attn_backward(ctx, do, dlse):
    q, k, v, o, lse, cu_q, cu_k = ctx.saved_tensors
    if do is None:
        do = torch.zeros_like(o)
    dq, dk, dv = torch.ops.weft.attention_backward(q, k, v, o, lse, do, *ctx.args, cu_q, cu_k, *ctx.offsets)
    if dlse is not None:
        if cu_q is not None:
            raise ValueError("weft_torch: gradients through the lse of a varlen attention call are not supported")
        scale, causal, wl, wr, softcap = ctx.args
        eq, ek = _lse_grad_dense(q, k, lse, dlse, scale, causal, wl, wr, softcap, *ctx.offsets)
        dq, dk = dq + eq.to(dq.dtype), dk + ek.to(dk.dtype)
    return dq, dk, dv, None, None, None, None, None, None, None, None, None


torch.library.register_autograd(lib + "attention", _attn_backward, setup_context=_attn_setup)


# ---- selective scan and causal conv1d (weft's layout: per-token [B,T,Dm], B, C [B,T,G,Ns]) --------


@torch.library.register_fake(lib + "selective_scan")
def _scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, output_final_state, cu_seqlens):
    N = _n_seq(u, cu_seqlens)
    hT = u.new_empty((N, u.shape[2], A.shape[1])) if output_final_state else u.new_empty((0,))
    return torch.empty_like(u), hT


@torch.library.register_fake(lib + "selective_scan_backward")
def _scan_bwd_fake(u, delta, A, B, C, dy, D, z, delta_bias, delta_softplus, initial_state, d_final_state, cu_seqlens,
                   need_d_initial):
    N = _n_seq(u, cu_seqlens)
    e = u.new_empty((0,))
    like = lambda t: torch.empty_like(t, dtype=u.dtype) if t is not None else e  # noqa: E731
    dh0 = u.new_empty((N, u.shape[2], A.shape[1])) if need_d_initial else e
    return (torch.empty_like(u), torch.empty_like(delta, dtype=u.dtype), like(A).contiguous(), like(B), like(C),
            like(D).contiguous(), like(z), like(delta_bias).contiguous(), dh0)


@torch.library.register_fake(lib + "selective_scan_step")
def _scan_step_fake(state, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return torch.empty_like(u)


def _scan_setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, bias, softplus, h0, _ofs, cu = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, bias, h0, cu)
    ctx.softplus = softplus
    ctx.set_materialize_grads(False)


def _scan_backward(ctx, dy, dhT):
    u, delta, A, B, C, D, z, bias, h0, cu = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(u)
    present = lambda t: t if t is not None and t.numel() > 0 else None  # noqa: E731
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = torch.ops.weft.selective_scan_backward(
        u, delta, A, B, C, dy, D, z, bias, ctx.softplus, h0, present(dhT), cu, bool(ctx.needs_input_grad[9]))
    cast = lambda d, x: d.to(x.dtype) if x is not None and d.numel() > 0 else None  # noqa: E731
    return (cast(du, u), cast(ddelta, delta), cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), cast(dz, z),
            cast(dbias, bias), None, cast(dh0, h0), None, None)


torch.library.register_autograd(lib + "selective_scan", _scan_backward, setup_context=_scan_setup)


def _time_major(t):
    return t.shape[2] > 1 and t.stride(2) != 1 and (t.shape[1] <= 1 or t.stride(1) == 1)


def _conv_dx_like(x, dy):
    """The conv backward's dx (ops_ssm.cpp): like x when x and dy are both time-major or x is
    channel-last, else channel-last (x and dy are copied to channel-last memory first)."""
    if (_time_major(x) and _time_major(dy)) or x.shape[2] <= 1 or x.stride(2) == 1:
        return torch.empty_like(x)
    return x.new_empty(x.shape)


def _conv_state_shape(x, weight, cu_seqlens):
    return (_n_seq(x, cu_seqlens), x.shape[2], max(weight.shape[1] - 1, 0))


@torch.library.register_fake(lib + "causal_conv1d")
def _conv_fake(x, weight, bias, initial_state, output_final_state, silu, cu_seqlens):
    hT = x.new_empty(_conv_state_shape(x, weight, cu_seqlens)) if output_final_state else x.new_empty((0,))
    return torch.empty_like(x), hT


@torch.library.register_fake(lib + "causal_conv1d_backward")
def _conv_bwd_fake(x, weight, bias, dy, initial_state, d_final_state, silu, cu_seqlens, need_d_initial):
    e = x.new_empty((0,))
    dh0 = x.new_empty(_conv_state_shape(x, weight, cu_seqlens)) if need_d_initial else e
    return (_conv_dx_like(x, dy), x.new_empty(weight.shape), x.new_empty(bias.shape) if bias is not None else e, dh0)


@torch.library.register_fake(lib + "causal_conv1d_step")
def _conv_step_fake(x, state, weight, bias, silu):
    return torch.empty_like(x)


def _conv_setup(ctx, inputs, output):
    x, weight, bias, h0, _ofs, silu, cu = inputs
    ctx.save_for_backward(x, weight, bias, h0, cu)
    ctx.silu = silu
    ctx.set_materialize_grads(False)


def _conv_backward(ctx, dy, dhT):
    x, weight, bias, h0, cu = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    dx, dw, db, dh0 = torch.ops.weft.causal_conv1d_backward(
        x, weight, bias, dy, h0, dhT if dhT is not None and dhT.numel() > 0 else None, ctx.silu, cu,
        bool(ctx.needs_input_grad[3]))
    cast = lambda d, t: d.to(t.dtype) if t is not None and d.numel() > 0 else None  # noqa: E731
    return cast(dx, x), cast(dw, weight), cast(db, bias), cast(dh0, h0), None, None, None


torch.library.register_autograd(lib + "causal_conv1d", _conv_backward, setup_context=_conv_setup)
