"""weft_torch.flash_attn against a float64 definition of softmax attention (GQA, flash-attn's
bottom-right causal alignment, windows, softcap), torch's SDPA, gradcheck, varlen, bad input."""
import pytest
import torch
import torch.nn.functional as F

import oracle
from weft_torch.flash_attn import flash_attn_func, flash_attn_varlen_func


def qkv(B, Tq, Tk, H, Hkv, D, dtype=torch.float32):
    return (torch.randn(B, Tq, H, D, dtype=dtype), torch.randn(B, Tk, Hkv, D, dtype=dtype),
            torch.randn(B, Tk, Hkv, D, dtype=dtype))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 8), (2, 63, 63, 4, 2, 64), (1, 17, 130, 6, 1, 40),
                                   (2, 130, 70, 2, 2, 128)])
@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_fp64(shape, causal):
    B, Tq, Tk, H, Hkv, D = shape
    q, k, v = qkv(B, Tq, Tk, H, Hkv, D)
    out, lse, _ = flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
    ref, ref_lse = oracle.attention(q, k, v, causal=causal)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse.double()[finite], ref_lse[finite], rtol=1e-4, atol=1e-4)
    assert torch.all(torch.isinf(lse[~finite]))  # queries that see no key (Tq > Tk, causal)


@pytest.mark.parametrize("window,softcap", [((16, 0), 0.0), ((5, 3), 0.0), ((-1, -1), 30.0), ((8, -1), 5.0)])
def test_window_and_softcap(window, softcap):
    q, k, v = qkv(2, 50, 50, 4, 2, 32)
    out = flash_attn_func(q, k, v, causal=window[1] == 0, window_size=window, softcap=softcap, softmax_scale=0.2)
    ref, _ = oracle.attention(q, k, v, causal=window[1] == 0, window=window, softcap=softcap, scale=0.2)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_against_torch_sdpa_forward_and_backward(causal):
    q, k, v = qkv(2, 96, 96, 8, 2, 64)
    for x in (q, k, v):
        x.requires_grad_()
    out = flash_attn_func(q, k, v, causal=causal)
    do = torch.randn_like(out)
    out.backward(do)
    got = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                         enable_gqa=True).transpose(1, 2)
    ref.backward(do)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for a, x in zip(got, (q, k, v)):
        torch.testing.assert_close(a, x.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("causal,window", [(False, (-1, -1)), (True, (-1, -1)), (True, (4, 0))])
def test_gradcheck_fp64(causal, window):
    q, k, v = qkv(1, 9, 13, 4, 2, 8, dtype=torch.float64)
    args = [x.requires_grad_() for x in (q, k, v)]
    f = lambda q, k, v: flash_attn_func(q, k, v, causal=causal, window_size=window, softcap=3.0)  # noqa: E731
    # weft's attention accumulates in fp32 also for double inputs (docs/attention.md), so the
    # outputs carry fp32 rounding (~1e-7): differences over eps = 1e-2 keep that noise near 1e-5
    # of the derivative (the gradients themselves are checked to 1e-4 against fp64 autograd in
    # test_lse_gradient and test_gradients_against_fp64_autograd)
    assert torch.autograd.gradcheck(f, args, eps=1e-2, atol=5e-4, rtol=1e-3)


@pytest.mark.parametrize("causal,window,softcap", [(False, (-1, -1), 0.0), (True, (4, 0), 3.0), (False, (3, 2), 0.0)])
def test_gradients_against_fp64_autograd(causal, window, softcap):
    q, k, v = qkv(2, 11, 17, 4, 2, 8, dtype=torch.float64)
    args = [x.requires_grad_() for x in (q, k, v)]
    out = flash_attn_func(*args, causal=causal, window_size=window, softcap=softcap)
    do = torch.randn_like(out)
    out.backward(do)
    got = [x.grad.clone() for x in args]
    for x in args:
        x.grad = None
    ref, _ = oracle.attention(*args, causal=causal, window=window, softcap=softcap)
    ref.backward(do)
    for a, x in zip(got, args):
        torch.testing.assert_close(a, x.grad, rtol=1e-4, atol=1e-5)


def test_lse_gradient():
    # a loss on lse as well as on out (as ring attention's merges use it), against SDPA-free fp64 autograd
    q, k, v = qkv(1, 12, 20, 4, 2, 8, dtype=torch.float64)
    args = [x.requires_grad_() for x in (q, k, v)]
    out, lse, _ = flash_attn_func(*args, causal=True, softcap=4.0, return_attn_probs=True)
    (out.sum() + (lse * torch.linspace(0, 1, lse.numel()).view_as(lse).double()).sum()).backward()
    got = [x.grad.clone() for x in args]
    for x in args:
        x.grad = None
    ro, rl = oracle.attention(*args, causal=True, softcap=4.0)
    (ro.sum() + (rl * torch.linspace(0, 1, rl.numel()).view_as(rl).double()).sum()).backward()
    for a, x in zip(got, args):
        torch.testing.assert_close(a, x.grad, rtol=1e-4, atol=1e-5)


def test_varlen_equals_separate_calls():
    lens = [7, 0, 40, 1, 19]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    T, H, Hkv, D = sum(lens), 4, 2, 32
    q, k, v = torch.randn(T, H, D), torch.randn(T, Hkv, D), torch.randn(T, Hkv, D)
    out = flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True)
    for s in range(len(lens)):
        a, b = int(cu[s]), int(cu[s + 1])
        if a == b:
            continue
        ref = flash_attn_func(q[None, a:b], k[None, a:b], v[None, a:b], causal=True)[0]
        torch.testing.assert_close(out[a:b], ref, rtol=1e-5, atol=1e-5)


def test_bad_input():
    q, k, v = qkv(1, 8, 8, 3, 2, 16)
    with pytest.raises(ValueError, match="k"):
        flash_attn_func(q, k, v)  # 2 KV heads do not divide 3 query heads
    q, k, v = qkv(1, 8, 8, 4, 2, 16)
    with pytest.raises(ValueError, match="dropout"):
        flash_attn_func(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="alibi"):
        flash_attn_func(q, k, v, alibi_slopes=torch.ones(4))
    with pytest.raises(ValueError, match="v"):
        flash_attn_func(q, k, v[:, :7])
    with pytest.raises(TypeError, match="BFloat16"):
        flash_attn_func(q.bfloat16(), k.bfloat16(), v.bfloat16())
    cu_q, cu_k = torch.tensor([0, 3, 8]), torch.tensor([0, 4, 8])
    with pytest.raises(ValueError, match="equal query and key lengths"):
        flash_attn_varlen_func(q[0], k[0], v[0], cu_q, cu_k, 5, 4, causal=True)


def test_opcheck():
    q, k, v = qkv(1, 10, 12, 4, 2, 16, dtype=torch.float64)
    for x in (q, k, v):
        x.requires_grad_()
    torch.library.opcheck(torch.ops.weft.attention.default, (q, k, v, None, True, -1, -1, 0.0, None, None, 2, 0))
