"""Plain float64 loops of the defining math (independent of weft and of FLA), differentiable by
torch autograd: the ground truth of weft_torch's tests."""
import math

import torch
import torch.nn.functional as F


def linear_attention(gate, q, k, v, g=None, beta=None, i=None, f=None, scale=None, h0=None, n0=None, m0=None,
                     sigmoid=False, eps=1e-6):
    """Token loop per (batch, head): returns o [B,T,H,V] and the final state(s)."""
    q, k, v = (x.double() for x in (q, k, v))
    B, T, H, K = q.shape
    V = v.shape[3]
    scale = K ** -0.5 if scale is None else scale
    S = h0.double().clone() if h0 is not None else q.new_zeros(B, H, K, V)
    n = n0.double().clone() if n0 is not None else q.new_zeros(B, H, K)
    m = m0.double().clone() if m0 is not None else q.new_zeros(B, H)
    outs = []
    for t in range(T):
        qt, kt, vt = q[:, t] * scale, k[:, t], v[:, t]  # [B,H,K], [B,H,V]
        kv = kt[..., :, None] * vt[..., None, :]
        if gate == "none":
            S = S + kv
        elif gate == "scalar":
            S = torch.exp(g[:, t].double())[..., None, None] * S + kv
        elif gate == "vector":
            S = torch.exp(g[:, t].double())[..., :, None] * S + kv
        elif gate in ("delta", "gated_delta"):
            if gate == "gated_delta":
                S = torch.exp(g[:, t].double())[..., None, None] * S
            pred = torch.einsum("bhk,bhkv->bhv", kt, S)
            S = S + beta[:, t].double()[..., None, None] * kt[..., :, None] * (vt - pred)[..., None, :]
        elif gate == "mlstm":
            lf = F.logsigmoid(f[:, t].double())
            li = F.logsigmoid(i[:, t].double()) if sigmoid else i[:, t].double()
            if sigmoid:
                fa, ia, mnew = torch.exp(lf), torch.exp(li), torch.zeros_like(m)
            else:
                mnew = torch.maximum(lf + m, li)
                fa, ia = torch.exp(lf + m - mnew), torch.exp(li - mnew)
            S = fa[..., None, None] * S + ia[..., None, None] * kv
            n = fa[..., None] * n + ia[..., None] * kt
            m = mnew
            num = torch.einsum("bhk,bhkv->bhv", qt, S)
            qn = (qt * n).sum(-1).abs()
            den = torch.maximum(qn, torch.exp(-m)) + eps
            outs.append(num / den[..., None])
            continue
        outs.append(torch.einsum("bhk,bhkv->bhv", qt, S))
    o = torch.stack(outs, 1) if outs else q.new_zeros(B, 0, H, V)
    return o, S, n, m


def attention(q, k, v, causal=False, scale=None, window=(-1, -1), softcap=0.0):
    """Softmax attention in float64 with GQA, bottom-right aligned causal mask (flash-attn's rule)."""
    q, k, v = (x.double() for x in (q, k, v))
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    scale = D ** -0.5 if scale is None else scale
    rep = Hq // Hkv
    k = k.repeat_interleave(rep, 2)
    v = v.repeat_interleave(rep, 2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    qi = torch.arange(Tq)[:, None] + (Tk - Tq)
    kj = torch.arange(Tk)[None, :]
    allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    if causal:
        allowed &= kj <= qi
    if window[0] >= 0:
        allowed &= kj >= qi - window[0]
    if window[1] >= 0:
        allowed &= kj <= qi + window[1]
    s = s.masked_fill(~allowed, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhd->bqhd", p, v), lse


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False, h0=None):
    """Mamba-1's recurrence in mamba's layout, token by token: u, delta, z [Bt,Dm,T], A [Dm,Ns],
    B, C [Bt,Ns,T] or [Bt,G,Ns,T], h0 [Bt,Dm,Ns]. Returns y [Bt,Dm,T] and the last state."""
    u, delta, A = u.double(), delta.double(), A.double()
    Bt, Dm, T = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if softplus:
        delta = torch.where(delta > 20, delta, torch.log1p(torch.exp(delta)))
    per_channel = lambda M: (M.double().unsqueeze(1).expand(Bt, Dm, *M.shape[1:]) if M.dim() == 3  # noqa: E731
                             else M.double().repeat_interleave(Dm // M.shape[1], dim=1))
    Bd, Cd = per_channel(B), per_channel(C)  # [Bt,Dm,Ns,T]
    h = h0.double().clone() if h0 is not None else u.new_zeros(Bt, Dm, A.shape[1])
    ys = []
    for t in range(T):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * Bd[..., t] * u[:, :, t, None]
        y = (h * Cd[..., t]).sum(-1)
        if D is not None:
            y = y + D.double() * u[:, :, t]
        if z is not None:
            zt = z[:, :, t].double()
            y = y * zt * torch.sigmoid(zt)
        ys.append(y)
    return (torch.stack(ys, dim=2) if ys else u.new_zeros(Bt, Dm, 0)), h


def causal_conv1d(x, weight, bias=None, h0=None, silu=False):
    """y[b,d,t] = act(bias[d] + sum_k weight[d,k] x[b,d,t-(W-1)+k]) with the W-1 inputs before the
    sequence from h0 [Bt,Dm,W-1] (zeros when absent); x [Bt,Dm,T]. Returns y and the last W-1
    inputs (the final state)."""
    x, weight = x.double(), weight.double()
    Bt, Dm, T = x.shape
    W = weight.shape[1]
    pre = h0.double() if h0 is not None else x.new_zeros(Bt, Dm, W - 1)
    full = torch.cat([pre, x], dim=2)
    y = torch.stack([(full[:, :, t:t + W] * weight).sum(-1) for t in range(T)] or [x.new_zeros(Bt, Dm)], dim=2)[..., :T]
    if bias is not None:
        y = y + bias.double()[:, None]
    if silu:
        y = y * torch.sigmoid(y)
    return y, full[:, :, full.shape[2] - (W - 1):]
