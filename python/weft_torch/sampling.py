"""Sampling and speculative verification with FlashInfer's names (`flashinfer.sampling`), on
weft's decode kernels: no full sort of the vocabulary, counter-based Philox randomness.

    from weft_torch.sampling import top_k_top_p_sampling_from_logits
    tokens = top_k_top_p_sampling_from_logits(logits, top_k=50, top_p=0.9)     # int32 [B]

Randomness: `seed` / `offset` (weft's Philox key: the same pair gives the same tokens on any
thread count), else a seed drawn from `generator` (or torch's default generator), so that
repeated calls differ as in FlashInfer. top_k / top_p / min_p are numbers (one value for every
row) or [B] tensors (a value per row). Rows whose logits hold NaN give -1.
"""
from typing import Optional, Tuple, Union

import torch

Num = Union[int, float, torch.Tensor]


def _seed(seed, generator):
    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def _rows(value, B, name, cast):
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return [cast(value.item())] * B, False
        if value.shape != (B,):
            raise ValueError(f"weft_torch: {name} must be a number or a [B] tensor (B = {B}), got shape "
                             f"{tuple(value.shape)}")
        vals = [cast(x) for x in value.tolist()]
        return vals, len(set(vals)) > 1
    return [cast(value)] * B, False


def _sample(x, probs, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=None, offset=0, generator=None):
    if x.dim() != 2:
        raise ValueError(f"weft_torch: {'probs' if probs else 'logits'} must be [B,Vocab], got shape {tuple(x.shape)}")
    B = x.shape[0]
    s = _seed(seed, generator)
    ks, kv = _rows(top_k, B, "top_k", int)
    ps, pv = _rows(top_p, B, "top_p", float)
    ms, mv = _rows(min_p, B, "min_p", float)
    if not (kv or pv or mv):
        k0, p0, m0 = (ks[0], ps[0], ms[0]) if B else (0, 1.0, 0.0)
        return torch.ops.weft.sample(x, probs, float(temperature), k0, p0, m0, s, int(offset), None, None)[0]
    # per-row values: one call per row (row b keyed by seed s + b)
    out = torch.empty(B, dtype=torch.int32)
    for b in range(B):
        # weft mixes the row index into a shared seed; a one-row call gets the row's own seed explicitly
        out[b] = torch.ops.weft.sample(x[b:b + 1], probs, float(temperature), ks[b], ps[b], ms[b], s + b, int(offset),
                                       None, None)[0][0]
    return out


def sampling_from_logits(logits, indices=None, deterministic=True, generator=None, check_nan=False, *, seed=None,
                         offset=0, temperature=1.0):
    """One token per row of logits [B,Vocab] from softmax(logits / temperature)."""
    return _sample(_index(logits, indices), False, temperature, seed=seed, offset=offset, generator=generator)


def sampling_from_probs(probs, indices=None, deterministic=True, generator=None, check_nan=False, *, seed=None,
                        offset=0):
    """One token per row of probabilities [B,Vocab] (rows sum to 1 within 1e-3)."""
    return _sample(_index(probs, indices), True, seed=seed, offset=offset, generator=generator)


def top_k_sampling_from_probs(probs, top_k, indices=None, deterministic=True, generator=None, check_nan=False, *,
                              seed=None, offset=0):
    return _sample(_index(probs, indices), True, top_k=top_k, seed=seed, offset=offset, generator=generator)


def top_p_sampling_from_probs(probs, top_p, indices=None, deterministic=True, generator=None, check_nan=False, *,
                              seed=None, offset=0):
    return _sample(_index(probs, indices), True, top_p=top_p, seed=seed, offset=offset, generator=generator)


def min_p_sampling_from_probs(probs, min_p, indices=None, deterministic=True, generator=None, check_nan=False, *,
                              seed=None, offset=0):
    return _sample(_index(probs, indices), True, min_p=min_p, seed=seed, offset=offset, generator=generator)


def top_k_top_p_sampling_from_logits(logits, top_k, top_p, indices=None, filter_apply_order="top_k_first",
                                     deterministic=True, generator=None, check_nan=False, *, seed=None, offset=0,
                                     temperature=1.0):
    """top-k, then top-p of the renormalised rest (FlashInfer's "top_k_first", Hugging Face's order)."""
    _order(filter_apply_order)
    return _sample(_index(logits, indices), False, temperature, top_k=top_k, top_p=top_p, seed=seed, offset=offset,
                   generator=generator)


def top_k_top_p_sampling_from_probs(probs, top_k, top_p, indices=None, filter_apply_order="top_k_first",
                                    deterministic=True, generator=None, check_nan=False, *, seed=None, offset=0):
    _order(filter_apply_order)
    return _sample(_index(probs, indices), True, top_k=top_k, top_p=top_p, seed=seed, offset=offset,
                   generator=generator)


def chain_speculative_sampling(draft_probs, draft_token_ids, target_probs, maybe_output_accepted_token_num=None,
                               maybe_output_emitted_draft_token_num=None, deterministic=True, generator=None, *,
                               seed=None, offset=0, lengths=None):
    """Speculative sampling of a chain of L drafts: draft_probs [B,L,Vocab], draft_token_ids [B,L],
    target_probs [B,L+1,Vocab]. Returns (output_token_ids int32 [B,L+1]: the accepted drafts, one
    recovered or bonus token, then -1; accepted int32 [B]; emitted int32 [B]). The output has the
    target's distribution. weft counts a draft as accepted only while every draft before it was
    (so accepted == emitted); FlashInfer's accepted count also counts drafts after the first
    rejection that would have passed, a statistic weft does not compute."""
    out, acc = torch.ops.weft.speculative_sample(draft_probs, draft_token_ids, target_probs, _seed(seed, generator),
                                                 int(offset), lengths)
    for dst in (maybe_output_accepted_token_num, maybe_output_emitted_draft_token_num):
        if dst is not None:
            dst.copy_(acc)
    return out, acc, acc.clone()


def verify_greedy(draft_token_ids, target_logits, lengths=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification: drafts kept while they equal the target's argmax, then the target's
    own token. Returns (output_token_ids int32 [B,L+1] padded with -1, accepted int32 [B])."""
    return torch.ops.weft.verify_greedy(draft_token_ids, target_logits, lengths)


def _index(x, indices):
    return x if indices is None else x[indices]


def _order(order):
    if order != "top_k_first":
        raise ValueError(f"weft_torch: filter_apply_order must be 'top_k_first' (weft's order), got {order!r}")
