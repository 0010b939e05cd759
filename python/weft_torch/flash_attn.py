"""flash-attn-compatible attention (`flash_attn.flash_attn_func`, `flash_attn_varlen_func`) on
weft's blockwise softmax attention, forward and backward.

    from weft_torch.flash_attn import flash_attn_func   # instead of: from flash_attn import ...
    out = flash_attn_func(q, k, v, causal=True)         # q [B,Tq,H,D], k, v [B,Tk,Hkv,D]

As in flash-attn: GQA / MQA (Hkv divides H), `softmax_scale` (default D^-1/2), the causal mask
aligned to the bottom-right corner when Tq != Tk, `window_size=(left, right)` (-1: unbounded),
`softcap`, and `return_attn_probs=True` returning `(out, softmax_lse [B,H,Tq], None)` (weft does
not form the probabilities). Refused with ValueError: `dropout_p > 0`, `alibi_slopes`, and for
varlen a causal or windowed call whose sequences have different query and key lengths (weft's
offsets are one pair for every sequence). A query that sees no key gets 0 (lse = -inf).
"""
import torch


def _check(fn, dropout_p, alibi_slopes):
    if dropout_p:
        raise ValueError(f"weft_torch.{fn}: dropout_p must be 0 (weft's attention has no dropout), got {dropout_p}")
    if alibi_slopes is not None:
        raise ValueError(f"weft_torch.{fn}: alibi_slopes are not supported")


def _window(window_size):
    left, right = window_size
    return int(left), int(right)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check("flash_attn_func", dropout_p, alibi_slopes)
    if q.dim() != 4:
        raise ValueError(f"weft_torch.flash_attn_func: q must be [B,Tq,H,D], got shape {tuple(q.shape)}")
    left, right = _window(window_size)
    q_offset = k.shape[1] - q.shape[1]  # bottom-right alignment: the last query sees the last key
    out, lse = torch.ops.weft.attention(q, k, v, None if softmax_scale is None else float(softmax_scale), bool(causal),
                                        left, right, float(softcap), None, None, q_offset, 0)
    return (out, lse, None) if return_attn_probs else out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None):
    """q [total_q, H, D], k, v [total_k, Hkv, D], cu_seqlens_* [N+1] (int32 or int64)."""
    _check("flash_attn_varlen_func", dropout_p, alibi_slopes)
    if block_table is not None:
        raise ValueError("weft_torch.flash_attn_varlen_func: block_table (paged KV) is not supported here")
    if q.dim() != 3:
        raise ValueError(f"weft_torch.flash_attn_varlen_func: q must be [total_q, H, D], got shape {tuple(q.shape)}")
    left, right = _window(window_size)
    if (causal or left >= 0 or right >= 0) and not torch.equal(
            cu_seqlens_q.diff().to(torch.int64), cu_seqlens_k.diff().to(torch.int64)):
        raise ValueError("weft_torch.flash_attn_varlen_func: causal or windowed attention needs equal query and key "
                         "lengths per sequence (weft's offsets are one pair for every sequence)")
    out, lse = torch.ops.weft.attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
                                        None if softmax_scale is None else float(softmax_scale), bool(causal), left,
                                        right, float(softcap), cu_seqlens_q, cu_seqlens_k, 0, 0)
    out = out.squeeze(0)
    return (out, lse.squeeze(0), None) if return_attn_probs else out
