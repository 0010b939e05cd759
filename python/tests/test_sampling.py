"""weft_torch.sampling against the exact filtered distribution (a float64 computation of the
top-k / top-p / min-p sets), speculative sampling's output law, greedy verification, bad input."""
import math

import pytest
import torch

from weft_torch import sampling as S


def filtered_law(logits, top_k=0, top_p=1.0, min_p=0.0, temperature=1.0):
    """The distribution weft samples from, in float64 (docs/decode.md's definition)."""
    x = logits.double() / temperature
    w = torch.exp(x - x.max())
    order = sorted(range(len(w)), key=lambda i: (-float(x[i]), i))
    keep = order[:top_k] if top_k else order
    total = sum(float(w[i]) for i in keep)
    p_set = [i for i in keep if sum(float(w[j]) for j in keep if x[j] > x[i]) < top_p * total]
    m_set = {i for i in range(len(w)) if float(x[i] - x.max()) >= (math.log(min_p) if min_p > 0 else -math.inf)}
    s = [i for i in p_set if i in m_set]
    law = torch.zeros_like(w)
    law[s] = w[s] / w[s].sum()
    return law


def empirical(tokens, V):
    return torch.bincount(tokens.long(), minlength=V).double() / tokens.numel()


@pytest.mark.parametrize("top_k,top_p,min_p,temperature", [(0, 1.0, 0.0, 1.0), (5, 1.0, 0.0, 0.7),
                                                            (0, 0.8, 0.0, 1.0), (8, 0.9, 0.0, 1.3),
                                                            (0, 1.0, 0.1, 1.0)])
def test_sampling_follows_the_filtered_law(top_k, top_p, min_p, temperature):
    V, n = 20, 40000
    row = torch.randn(V) * 1.5
    logits = row.expand(n, V).contiguous()  # n rows, one draw each: the row index is mixed into the key
    tokens = S.top_k_top_p_sampling_from_logits(logits, top_k, top_p, seed=7, temperature=temperature) \
        if min_p == 0 else S.min_p_sampling_from_probs(torch.softmax(logits, -1), min_p, seed=7)
    law = filtered_law(row, top_k, top_p, min_p, temperature)
    freq = empirical(tokens, V)
    assert torch.all(freq[law == 0] == 0), "a token outside the kept set was drawn"
    # 5 standard deviations of a binomial frequency
    sd = torch.sqrt(law * (1 - law) / n)
    assert torch.all((freq - law).abs() <= 5 * sd + 1e-12)


def test_seeds_and_threads_give_the_same_tokens():
    logits = torch.randn(64, 1000)
    a = S.sampling_from_logits(logits, seed=3, offset=5)
    b = S.sampling_from_logits(logits, seed=3, offset=5)
    c = S.sampling_from_logits(logits, seed=3, offset=6)
    assert a.dtype == torch.int32 and torch.equal(a, b) and not torch.equal(a, c)


def test_greedy_and_per_row_parameters():
    logits = torch.randn(6, 50)
    assert torch.equal(S.top_k_sampling_from_probs(torch.softmax(logits, -1), 1, seed=1),
                       logits.argmax(-1).int())
    ks = torch.tensor([1, 1, 1, 1, 1, 1])
    assert torch.equal(S.top_k_top_p_sampling_from_logits(logits, ks, torch.full((6,), 0.5), seed=2),
                       logits.argmax(-1).int())
    ks = torch.tensor([1, 0, 1, 0, 1, 0])
    t = S.top_k_top_p_sampling_from_logits(logits, ks, 1.0, seed=2)
    assert torch.equal(t[0::2], logits.argmax(-1).int()[0::2])


def test_chain_speculative_sampling_law_and_rules():
    B, L, V = 30000, 2, 6
    torch.manual_seed(1)
    p_draft = torch.softmax(torch.randn(L, V), -1)
    p_target = torch.softmax(torch.randn(L + 1, V), -1)
    draft_tokens = torch.multinomial(p_draft, B, replacement=True).T.int().contiguous()  # [B, L]
    dp = p_draft.expand(B, L, V).contiguous()
    tp = p_target.expand(B, L + 1, V).contiguous()
    out, acc, emitted = S.chain_speculative_sampling(dp, draft_tokens, tp, seed=11)
    assert out.shape == (B, L + 1) and out.dtype == torch.int32
    # the first emitted token follows the target's law at position 0
    freq = empirical(out[:, 0], V)
    sd = torch.sqrt(p_target[0].double() * (1 - p_target[0].double()) / B)
    assert torch.all((freq - p_target[0].double()).abs() <= 5 * sd)
    # rows: accepted drafts equal the drafts, then one more token, then -1
    for b in range(200):
        a = int(acc[b])
        assert torch.equal(out[b, :a], draft_tokens[b, :a])
        assert out[b, a] >= 0 and torch.all(out[b, a + 1:] == -1)
    # a draft the target gives no mass is always rejected
    tp0 = tp.clone()
    tp0[:, 0, :] = 0
    tp0[:, 0, 0] = 1
    dt = torch.full((B, L), 3, dtype=torch.int32)
    out, acc, _ = S.chain_speculative_sampling(dp, dt, tp0, seed=1)
    assert torch.all(acc == 0) and torch.all(out[:, 0] == 0)


def test_verify_greedy():
    logits = torch.randn(3, 4, 10)
    arg = logits.argmax(-1).int()
    drafts = arg[:, :3].clone()
    drafts[1, 1] = (drafts[1, 1] + 1) % 10
    out, acc = S.verify_greedy(drafts, logits)
    assert acc.tolist() == [3, 1, 3]
    assert torch.equal(out[0], arg[0]) and out[1, :2].tolist() == arg[1, :2].tolist() and out[1, 2:].tolist() == [-1, -1]


def test_bad_input():
    logits = torch.randn(2, 10)
    with pytest.raises(ValueError, match="top_p"):
        S.top_p_sampling_from_probs(torch.softmax(logits, -1), 1.5, seed=0)
    with pytest.raises(ValueError, match="top_k"):
        S.top_k_sampling_from_probs(torch.softmax(logits, -1), 11, seed=0)
    with pytest.raises(ValueError, match="probs"):
        S.sampling_from_probs(torch.rand(2, 10) * 3, seed=0)  # rows do not sum to 1
    with pytest.raises(ValueError, match=r"\[B,Vocab\]"):
        S.sampling_from_logits(torch.randn(10), seed=0)
    with pytest.raises(TypeError, match="Half"):
        S.sampling_from_logits(logits.half(), seed=0)
    with pytest.raises(ValueError, match="draft"):
        S.chain_speculative_sampling(torch.softmax(torch.randn(2, 2, 10), -1), torch.full((2, 2), 10),
                                     torch.softmax(torch.randn(2, 3, 10), -1), seed=0)


def test_nan_rows_are_invalid():
    logits = torch.randn(3, 10)
    logits[1, 4] = float("nan")
    t = S.sampling_from_logits(logits, seed=0)
    assert t[1] == -1 and t[0] >= 0 and t[2] >= 0
