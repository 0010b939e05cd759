"""mamba_ssm- and causal-conv1d-compatible calls on weft's selective scan and causal conv1d:
forward, backward (autograd through weft's backward kernels) and decode steps.

    from weft_torch.mamba import selective_scan_fn, causal_conv1d_fn
    # instead of: from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    #             from causal_conv1d import causal_conv1d_fn
    x = causal_conv1d_fn(x, conv_weight, conv_bias, activation="silu")        # x [B,D,L]
    y = selective_scan_fn(x, dt, A, B, C, D, z=z, delta_bias=dt_bias, delta_softplus=True)

mamba's layout: u, delta, z, x, out [B,D,L]; A [D,N]; B, C [B,N,L] or grouped [B,G,N,L]; states
[B,D,N] (scan) and [B,D,W-1] (conv). Any strides are read in place: mamba's channel-major
memory ([B,D,L] contiguous, as mamba_simple.py passes it) and channel-last memory (a [B,L,D]
buffer passed as its transpose, as Mamba-2 does) both have fast paths, and outputs keep their
inputs' memory layout. (The conv's backward copies x and dy to channel-last memory when they are
not both channel-major, and then returns a channel-last dx.) float32 and float64; parameters
and states are converted to the inputs' dtype.

Beyond mamba's calls: `initial_state` [N,D,N_s] and `cu_seqlens` [N+1] (packed sequences along
L, B == 1, empty and length-1 sequences allowed) for selective_scan_fn; `cu_seqlens` for
causal_conv1d_fn; gradients flow through the returned last / final states and initial states.
Refused with ValueError: complex A, time-invariant B or C ([D,N]), causal_conv1d's `seq_idx`
(use cu_seqlens), a circular conv state (`cache_seqlens`, `conv_state_indices`) or one longer
than W-1.
"""
import torch

__all__ = ["selective_scan_fn", "selective_state_update", "causal_conv1d_fn", "causal_conv1d_update"]


def _tok(t):
    """mamba's [B,D,L] -> weft's [B,L,D] (a view)."""
    return None if t is None else t.transpose(1, 2)


def _bc(name, t):
    """B or C: mamba's [B,N,L] or [B,G,N,L] -> weft's [B,L,G,N] (a view)."""
    if t.dim() == 3:
        return t.movedim(-1, 1).unsqueeze(2)
    if t.dim() == 4:
        return t.movedim(-1, 1)
    raise ValueError(f"weft_torch.selective_scan_fn: {name} must vary with time, [B,N,L] or [B,G,N,L]; got shape "
                     f"{tuple(t.shape)} (time-invariant B and C are not supported)")


def _rank(fn, name, t, ranks, shape):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"weft_torch.{fn}: {name} must be a tensor, got {type(t).__name__}")
    if t.dim() not in ranks:
        raise ValueError(f"weft_torch.{fn}: {name} must be {shape}, got shape {tuple(t.shape)}")


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, *, initial_state=None, cu_seqlens=None):
    """mamba_ssm's selective_scan_fn: out [B,D,L] (and last_state [B,D,N] with return_last_state;
    [N_seq,D,N] under cu_seqlens)."""
    fn = "selective_scan_fn"
    for name, t in (("u", u), ("delta", delta)):
        _rank(fn, name, t, (3,), "[B,D,L]")
    _rank(fn, "A", A, (2,), "[D,N]")
    if A.is_complex():
        raise ValueError("weft_torch.selective_scan_fn: complex A is not supported (real A only)")
    if z is not None:
        _rank(fn, "z", z, (3,), "[B,D,L]")
    y, last = torch.ops.weft.selective_scan(_tok(u), _tok(delta), A, _bc("B", B), _bc("C", C), D, _tok(z), delta_bias,
                                            bool(delta_softplus), initial_state, bool(return_last_state), cu_seqlens)
    out = y.transpose(1, 2)
    return (out, last) if return_last_state else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """mamba_ssm's selective_state_update: one token, state updated in place; returns out.

    Without heads: state [B,D,N], x, dt, z [B,D], A [D,N], B, C [B,N] or [B,G,N], D, dt_bias [D].
    With heads (Mamba-2's form): state [B,H,D,N], x, dt, z [B,H,D], A [H,D,N], B, C [B,G,N] (G
    divides H), D, dt_bias [H,D]; heads and their channels are weft's H*D channels, G groups of
    consecutive heads."""
    fn = "selective_state_update"
    _rank(fn, "state", state, (3, 4), "[B,D,N] or [B,H,D,N]")
    heads = state.dim() == 4
    if heads:
        b, h, d, n = state.shape
        flat = state.view(b, h * d, n)  # in place: a view of the caller's tensor
        tok = lambda t: None if t is None else t.reshape(b, h * d)  # noqa: E731
        par = lambda t: None if t is None else t.reshape(h * d, *t.shape[2:])  # noqa: E731
        x_, dt_, z_ = tok(x), tok(dt), tok(z)
        A_, D_, bias_ = par(A), par(D), par(dt_bias)
    else:
        flat, x_, dt_, z_, A_, D_, bias_ = state, x, dt, z, A, D, dt_bias
    grouped = lambda t: t.unsqueeze(1) if t.dim() == 2 else t  # noqa: E731
    return torch.ops.weft.selective_scan_step(flat, x_, dt_, A_, grouped(B), grouped(C), D_, z_, bias_,
                                              bool(dt_softplus)).view(x.shape)


def _silu(fn, activation):
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"weft_torch.{fn}: activation must be None, 'silu' or 'swish', got {activation!r}")
    return activation in ("silu", "swish")


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None, *, cu_seqlens=None):
    """causal-conv1d's causal_conv1d_fn: out [B,D,L] (and final_states [B,D,W-1] with
    return_final_states, written into final_states_out when given)."""
    fn = "causal_conv1d_fn"
    silu = _silu(fn, activation)
    if seq_idx is not None:
        raise ValueError("weft_torch.causal_conv1d_fn: seq_idx is not supported; pass packed sequences' offsets as "
                         "cu_seqlens=[N+1] (B == 1)")
    _rank(fn, "x", x, (3,), "[B,D,L]")
    y, final = torch.ops.weft.causal_conv1d(_tok(x), weight, bias, initial_states, bool(return_final_states), silu,
                                            cu_seqlens)
    out = y.transpose(1, 2)
    if not return_final_states:
        return out
    if final_states_out is not None:
        final_states_out.copy_(final)
        final = final_states_out
    return out, final


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None,
                         conv_state_indices=None):
    """causal-conv1d's causal_conv1d_update: x [B,D] or [B,D,L] (L tokens one after the other),
    conv_state [B,D,W-1] updated in place; returns out of x's shape."""
    fn = "causal_conv1d_update"
    silu = _silu(fn, activation)
    if cache_seqlens is not None or conv_state_indices is not None:
        raise ValueError("weft_torch.causal_conv1d_update: cache_seqlens and conv_state_indices (a circular or "
                         "indexed conv state) are not supported")
    _rank(fn, "x", x, (2, 3), "[B,D] or [B,D,L]")
    _rank(fn, "weight", weight, (2,), "[D,W]")
    _rank(fn, "conv_state", conv_state, (3,), "[B,D,W-1]")
    if conv_state.shape[2] != weight.shape[1] - 1:
        raise ValueError(f"weft_torch.causal_conv1d_update: conv_state must hold exactly W-1 = {weight.shape[1] - 1} "
                         f"inputs per channel, got state_len {conv_state.shape[2]}")
    if x.dim() == 2:
        return torch.ops.weft.causal_conv1d_step(x, conv_state, weight, bias, silu)
    return torch.stack([torch.ops.weft.causal_conv1d_step(x[:, :, t], conv_state, weight, bias, silu)
                        for t in range(x.shape[2])], dim=2)
