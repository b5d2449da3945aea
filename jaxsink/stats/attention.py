"""Attention sinks: importance scores, sink heads and the sink ratio (paper App. A, Eqs. 27-28), Gu et al.'s
Sink_1, first-token mass, the locality of heads, and the dimension of sink keys (§3.2.2).

Pure functions wrapped in `probe_jit` (traced under a caller's jit, NumPy from the host); the blockwise
variant takes a callable, so it is not jitted itself: jit its caller.
probs [..., H, T, T] holds one layer's attention (row t = query, column k = key, 0-based, causal). Rows may
sum to less than 1: a variant with an extra always-visible slot (learnable sink token, key bias,
softmax-off-by-one) puts mass outside the T keys, and nothing here renormalises it away except where
stated. Positions are 0-based except where marked "(1-based)", the paper's convention.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxsink.stats.activations import host_unless_traced, probe_jit


# ------------------------------------------------------------------ what the sink statistics read

UNNORMALISED = ("sigmoid", "relu")   # attention kinds whose rows do not sum to one by construction


@probe_jit
def proxy_probs(probs):
    """Gu et al.'s "proxy attention scores" (2025, §7.4, Table 6) for attention without normalisation: each
    query row divided by its sum over the visible keys, so the sink ratio's eps = 0.3 means the same share of
    a row as under softmax. Raw sigmoid weights near sigmoid(0) = 0.5 would otherwise flag every head on
    every key. A row with no mass stays zero."""
    p = jnp.asarray(probs).astype(jnp.float32)
    total = jnp.sum(p, axis=-1, keepdims=True)
    return jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), 0.0)


def sink_view(probs, attention: str):
    """The attention that sink statistics read for a model of this `model.attention` kind: the probabilities
    themselves, or their proxy (`proxy_probs`) for unnormalised kinds. Kinds with an extra slot (sink logit,
    softmax-off-by-one, key biases) keep rows that sum to less than one: the slot's mass is real attention
    to no key, and Gu et al. count it that way (their K-bias model has Sink_1 = 0%)."""
    return proxy_probs(probs) if attention in UNNORMALISED else probs


# ------------------------------------------------------------------ sink heads (importance scores alpha_k: head_stats)


@probe_jit
def sink_flags(alpha, eps: float = 0.3):
    """Sink head (Eq. 28): max over the first floor(T/2) keys of alpha_k exceeds eps (strictly). The
    window is 1-based k <= floor(T/2), i.e. 0-based k < T // 2, so T >= 2. alpha [..., T] -> bool [...]."""
    return jnp.max(alpha[..., : alpha.shape[-1] // 2], axis=-1) > eps


@probe_jit(static=("per_sequence",))
def sink_ratio(flags, per_sequence: bool = False):
    """The sink ratio s_eps (Eq. 28): the share of (layer, head) pairs flagged, per sequence, then the mean
    over sequences (the model-level number). flags [n_layers, B, H] -> scalar, or [B] with per_sequence.
    Works for any per-head flag, e.g. Gu et al.'s Sink_1 from `head_stats(...)["gu_sink1"]`."""
    per_seq = jnp.mean(jnp.asarray(flags).astype(jnp.float32), axis=(0, 2))
    return per_seq if per_sequence else jnp.mean(per_seq)


# ------------------------------------------------------------------ per-head statistics, dense or blockwise

def _query_block_sums(p, start, first=0):
    """Additive partial sums of the query rows start..start+n-1 (p = A[..., start:start+n, :]), skipping
    rows before `first` (already counted by the previous block): column sums [..., H, T]; the sum over
    counted queries of their sink-free mean distance, and their number [..., H]. A query t is counted when
    it puts positive mass on keys 1..t (0-based, i.e. all but the first key), which excludes t = 0 and
    queries whose whole mass sits on the sink or an extra slot."""
    q = (start + jnp.arange(p.shape[-2]))[:, None]
    k = jnp.arange(p.shape[-1])[None, :]
    p = jnp.where(q >= first, p.astype(jnp.float32), 0.0)
    rest = jnp.where((k >= 1) & (k <= q), p, 0.0)
    mass = jnp.sum(rest, -1)
    counted = mass > 0
    distance = jnp.sum(rest * (q - k).astype(jnp.float32), -1) / jnp.where(counted, mass, 1.0)
    return jnp.sum(p, -2), jnp.sum(jnp.where(counted, distance, 0.0), -1), jnp.sum(counted, -1)


def _head_stats_from_sums(col_sum, dist_sum, n_counted, eps: float) -> dict:
    t = col_sum.shape[-1]
    alpha = col_sum / t
    alpha1 = alpha[..., 0]
    return {"first_token_mass": alpha1,
            "alpha_first_half": alpha[..., : t // 2],
            "max_alpha_first_half": jnp.max(alpha[..., : t // 2], -1),
            "is_sink": sink_flags(alpha, eps),
            "gu_sink1": alpha1 > eps,
            "mean_distance": dist_sum / jnp.where(n_counted > 0, n_counted, jnp.nan)}


def head_stats_blockwise(probs_block: Callable, seq_len: int, block: int, eps: float = 0.3) -> dict:
    """`head_stats` from query blocks, for sequences too long for T x T probabilities.

    probs_block(start, size) -> A[..., H, start:start+size, :] (all T keys). `size` = min(block, T) is
    static; `start` is an int32 scalar, traced inside `lax.scan`, so slice with
    `jax.lax.dynamic_slice_in_dim` (only the first block gets a Python 0: with T <= block a static slice
    works too). A scan, unlike an unrolled Python loop, keeps one block live at a time, so memory grows
    with T x block per head, not T^2. When block does not divide T the last block starts at T - size and
    skips the rows already counted. The result equals the dense one up to summation order.
    """
    size = min(block, seq_len)

    def add(sums, first):
        start = jnp.minimum(first, seq_len - size)
        return tuple(a + b for a, b in zip(sums, _query_block_sums(probs_block(start, size), start, first))), None

    sums = _query_block_sums(probs_block(0, size), 0)
    if seq_len > size:
        sums, _ = jax.lax.scan(add, sums, jnp.arange(size, seq_len, size))
    return host_unless_traced(_head_stats_from_sums(*sums, eps))


@probe_jit
def head_stats(probs, eps: float = 0.3) -> dict:
    """Per (sequence, head) statistics of one layer, probs [..., H, T, T]:
    - first_token_mass: mean over queries of A[t, 0] = the paper's alpha_1 = Gu's alpha_1;
    - alpha_first_half [..., H, T//2]: alpha_k for the keys of the sink window (notes §7 logging);
    - max_alpha_first_half and is_sink: Eq. 28's max and flag (`sink_flags`);
    - gu_sink1: Gu et al.'s flag alpha_1 > eps (its mean over layers and heads is Sink_1);
    - mean_distance: for each query t >= 1, A[t, 1..t] (0-based keys) renormalised to sum 1 gives
      sum_k A(t - k); averaged over the counted queries (see `_query_block_sums`); NaN if none (T = 1).
    """
    p = jnp.asarray(probs)
    return head_stats_blockwise(lambda start, size: p, p.shape[-1], p.shape[-1], eps)


@probe_jit
def distance_by_sink(mean_distance, is_sink) -> dict:
    """Locality of sink vs non-sink heads (§4.3.3: sink heads attend near the query): the mean of
    `mean_distance` over all flagged entries and over all others (any matching shapes, e.g. [n_layers, B, H]).
    NaN for an empty group; entries whose distance is NaN are left out."""
    d = jnp.asarray(mean_distance, jnp.float32)
    ok = ~jnp.isnan(d)
    flags = jnp.asarray(is_sink, bool)

    def group_mean(sel):
        sel = sel & ok
        return jnp.sum(jnp.where(sel, d, 0.0)) / jnp.where(jnp.any(sel), jnp.sum(sel), jnp.nan)

    return {"sink": group_mean(flags), "non_sink": group_mean(~flags)}


# ------------------------------------------------------------------ sink keys (§3.2.2, notes §2.13)

@probe_jit
def effective_rank(x, energy: float = 0.99) -> dict:
    """Dimension of stacked vectors x [..., N, d], e.g. one head's keys at the sink position across N
    prompts (expected 1-2 for sink keys): `rank` is the number of singular values holding `energy` of the
    squared Frobenius norm; `participation_ratio` is (sum s^2)^2 / sum s^4. Choice: no mean-centering, since
    the shared direction of the sink keys is what matters. Returns arrays of shape [...]."""
    s2 = jnp.square(jnp.linalg.svd(jnp.asarray(x).astype(jnp.float32), compute_uv=False))
    total = jnp.sum(s2, -1, keepdims=True)
    cum = jnp.cumsum(s2, -1) / total
    return {"rank": 1 + jnp.sum(cum < energy, -1), "participation_ratio": total[..., 0] ** 2 / jnp.sum(s2 ** 2, -1)}
