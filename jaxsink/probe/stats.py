"""Spike and sink statistics: pure, jit-able functions of captured intermediates (no model code here).

The same functions serve training-time logging (inside the jitted step), post-hoc probes of trained
checkpoints and probes of imported pretrained models. Conventions:
- residual / block outputs: h [B, T, D] per block; attention probabilities: A [B, H, T, T] (row = query,
  column = key; rows may sum to < 1 when a variant has an extra sink/bias slot);
- blocks use the paper's indexing (2L blocks, 1-based; odd = attention, even = FFN).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


# ------------------------------------------------------------------ massive activations (paper §3.1, Sun et al.)

@dataclasses.dataclass(frozen=True)
class SpikeCriterion:
    """An entry h[t, c] is massive when |h| > abs_threshold AND |h| > rel_factor x median |h| of that
    sequence's hidden state (Sun et al. 2024: 100 and 1000). Tiny models never reach |h| > 100, so
    `relative()` drops the absolute threshold and asks for a smaller ratio (our choice: 20x the median)."""
    abs_threshold: float = 100.0
    rel_factor: float = 1000.0

    @classmethod
    def relative(cls, rel_factor: float = 20.0) -> "SpikeCriterion":
        return cls(0.0, rel_factor)


def magnitude_stats(h):
    """Per sequence (Sun et al. protocol): top-3 |h| over all tokens and channels, median |h|, and the
    (position, channel) of the maximum. Returns arrays with a leading batch axis."""
    a = jnp.abs(h.astype(jnp.float32))
    b, t, d = a.shape
    flat = a.reshape(b, t * d)
    top3, idx = jax.lax.top_k(flat, 3)
    return {"top3": top3, "median": jnp.median(flat, axis=1),
            "argmax_position": idx[:, 0] // d, "argmax_channel": idx[:, 0] % d}


def massive_mask(h, criterion: SpikeCriterion):
    """Boolean [B, T, D]: the massive entries of each sequence's hidden state."""
    a = jnp.abs(h.astype(jnp.float32))
    median = jnp.median(a.reshape(a.shape[0], -1), axis=1)[:, None, None]
    return (a > criterion.abs_threshold) & (a > criterion.rel_factor * median)


def spike_top1(residual_top1_per_block) -> float:
    """The tables' "Spike": top-1 |h| over all blocks of the residual stream, per sequence, averaged over
    sequences (our reading of the undefined column, paper-notes §2.11). Input [n_blocks, B]."""
    return float(np.mean(np.max(np.asarray(residual_top1_per_block), axis=0)))


# ------------------------------------------------------------------ life cycle: step-up / step-down (§3.1.1)

def life_cycle_blocks(residual, outputs, frac: float = 0.25) -> tuple[list[int], list[int]]:
    """Step-up and step-down blocks from the spike-channel value at the spike token.

    residual[i], outputs[i] (i = 0..n_blocks-1, block i+1) are the signed values of the dominant spike
    channel at the spike token (averaged over sequences); r_0 before block 1 is taken as 0.
    Rules (ours; the paper describes them in words):
    - peak = the residual after the block where |r| is largest;
    - step-up: a block at or before the peak whose output has the peak's sign and magnitude >= frac x |peak|
      (the one or two blocks that inject the spike);
    - step-down: a block after the peak whose output has the opposite sign of the residual before it and
      magnitude >= frac x that residual (the late blocks that cancel the spike).
    Returns 1-based block indices.
    """
    r, o = np.asarray(residual, float), np.asarray(outputs, float)
    peak_i = int(np.argmax(np.abs(r)))
    peak = r[peak_i]
    if peak == 0:
        return [], []
    up = [i + 1 for i in range(peak_i + 1) if np.sign(o[i]) == np.sign(peak) and abs(o[i]) >= frac * abs(peak)]
    down = []
    for i in range(peak_i + 1, len(r)):
        before = r[i - 1]
        if before != 0 and np.sign(o[i]) == -np.sign(before) and abs(o[i]) >= frac * abs(before):
            down.append(i + 1)
    return up, down


# ------------------------------------------------------------------ sinks (App. A Eq. 27-28; Gu et al. 2025)

def importance(probs):
    """alpha_k = (1/T) sum_t A[t, k]  (paper Eq. 27), [B, H, T]."""
    return jnp.mean(probs.astype(jnp.float32), axis=2)


def sink_flags(alpha, eps: float = 0.3):
    """A head is a sink head when max over the first floor(T/2) keys (1-based k <= T/2, i.e. 0-based
    k < T//2) of alpha_k exceeds eps (Eq. 28). alpha [B, H, T] -> bool [B, H]."""
    t = alpha.shape[-1]
    return jnp.max(alpha[..., : t // 2], axis=-1) > eps


def gu_importance(probs):
    """Gu et al.: alpha_k = sum_{t>=k} A[t,k] / (T-k+1) (1-based), the mean over the queries that can see
    key k. [B, H, T]. For the first key it equals the paper's alpha_1."""
    t = probs.shape[-1]
    return jnp.sum(probs.astype(jnp.float32), axis=2) / jnp.arange(t, 0, -1, dtype=jnp.float32)


def mean_distance(probs):
    """Per head, the mean attention distance sum_k A[t,k] (t-k) with the sink position (k = 0) removed and
    A[t, 1..t] renormalised; averaged over the queries t >= 1 that put mass on k >= 1. [B, H]."""
    p = probs.astype(jnp.float32)
    t = p.shape[-1]
    q_pos, k_pos = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
    rest = jnp.where(k_pos >= 1, p, 0.0)
    mass = jnp.sum(rest, axis=-1)                                      # [B, H, T]
    dist = jnp.sum(rest * (q_pos - k_pos).astype(jnp.float32), axis=-1)
    valid = mass > 1e-9
    per_query = jnp.where(valid, dist / jnp.where(valid, mass, 1.0), 0.0)
    return jnp.sum(per_query, axis=-1) / jnp.maximum(jnp.sum(valid, axis=-1), 1)


def head_stats(probs, eps: float = 0.3) -> dict:
    """Everything per (sequence, head) that the probe reports for one attention layer."""
    alpha = importance(probs)
    return {"first_token_mass": alpha[..., 0], "max_alpha_first_half": jnp.max(alpha[..., : alpha.shape[-1] // 2], -1),
            "is_sink": sink_flags(alpha, eps), "gu_alpha1": gu_importance(probs)[..., 0],
            "mean_distance": mean_distance(probs)}


def head_stats_blockwise(probs_block, seq_len: int, block: int, eps: float = 0.3) -> dict:
    """`head_stats` computed from query blocks: `probs_block(q0, q1)` -> A[:, :, q0:q1, :]. Memory grows
    with seq_len x block per head instead of seq_len^2; results equal the dense computation."""
    col_sum, dist_sum, n_valid = None, None, None
    k_pos = jnp.arange(seq_len)[None, :]
    for q0 in range(0, seq_len, block):
        p = probs_block(q0, min(q0 + block, seq_len)).astype(jnp.float32)
        q_pos = jnp.arange(q0, q0 + p.shape[2])[:, None]
        rest = jnp.where(k_pos >= 1, p, 0.0)
        mass = jnp.sum(rest, -1)
        valid = mass > 1e-9
        per_query = jnp.where(valid, jnp.sum(rest * (q_pos - k_pos), -1) / jnp.where(valid, mass, 1.0), 0.0)
        parts = (jnp.sum(p, axis=2), jnp.sum(per_query, -1), jnp.sum(valid, -1))
        col_sum, dist_sum, n_valid = parts if col_sum is None else \
            (col_sum + parts[0], dist_sum + parts[1], n_valid + parts[2])
    alpha = col_sum / seq_len
    return {"first_token_mass": alpha[..., 0], "max_alpha_first_half": jnp.max(alpha[..., : seq_len // 2], -1),
            "is_sink": sink_flags(alpha, eps), "gu_alpha1": col_sum[..., 0] / seq_len,
            "mean_distance": dist_sum / jnp.maximum(n_valid, 1)}


# ------------------------------------------------------------------ near-constancy and sparsity (§3.2.1)

def rms_normalize(h):
    """sqrt(D) h / ||h||: the paper's scale-free RMSNorm (Eq. 5); bounded by sqrt(D) per entry (Eq. 23)."""
    h = jnp.asarray(h, jnp.float32)
    return h * jnp.sqrt(jnp.float32(h.shape[-1])) / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-30)


def mean_pairwise_cosine(v):
    """Mean cosine over distinct pairs of RMSNorm(v_i) (v [N, D], e.g. the spike token of N prompts):
    near 1 = a near-constant normalised representation (Eq. 25, Fig. 5)."""
    u = rms_normalize(v)
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    n = u.shape[0]
    c = u @ u.T
    return (jnp.sum(c) - jnp.trace(c)) / max(n * (n - 1), 1)


def multi_hotness(v, k: int = 3) -> dict:
    """How sparse (multi-hot) a normalised vector is (Eq. 24): the share of its squared norm in its top-k
    channels, and the participation ratio (sum v^2)^2 / sum v^4 (number of channels that matter)."""
    sq = jnp.square(jnp.asarray(v, jnp.float32))
    top = jax.lax.top_k(sq, k)[0]
    return {"topk_energy": jnp.sum(top, -1) / jnp.sum(sq, -1),
            "participation_ratio": jnp.square(jnp.sum(sq, -1)) / jnp.sum(jnp.square(sq), -1)}


def effective_rank(x, energy: float = 0.99) -> dict:
    """Of stacked vectors x [N, d] (e.g. one head's sink keys across prompts): the number of singular values
    holding `energy` of the squared Frobenius norm, and the participation ratio of the spectrum."""
    s2 = np.square(np.linalg.svd(np.asarray(x, np.float64), compute_uv=False))
    cum = np.cumsum(s2) / max(s2.sum(), 1e-300)
    return {"rank_99": int(np.searchsorted(cum, energy) + 1), "participation_ratio": float(s2.sum() ** 2 / max((s2 ** 2).sum(), 1e-300))}


# ------------------------------------------------------------------ step-up FFN mechanism (§3.1.2-3.1.3)

def silu_identity(z):
    """Per token: cos(z, SiLU(z)) and ||SiLU(z)|| / ||z|| for the SwiGLU gate pre-activation z [..., F]
    (Fig. 2: both ~1 for spike tokens in step-up blocks)."""
    z = jnp.asarray(z, jnp.float32)
    s = jax.nn.silu(z)
    nz, ns = jnp.linalg.norm(z, axis=-1), jnp.linalg.norm(s, axis=-1)
    return {"cos": jnp.sum(z * s, -1) / jnp.maximum(nz * ns, 1e-30), "norm_ratio": ns / jnp.maximum(nz, 1e-30)}


def fold_norm_scale(gamma, *weights):
    """Fold an RMSNorm scale into the following input-side weights (rows indexed by the input channel)."""
    return tuple(jnp.asarray(gamma)[:, None] * jnp.asarray(w) for w in weights)


def uk_frobenius(w_gate, w_up, w_down):
    """||U_k||_F for every output channel k, with U_k = sum_i w_down[i,k] w_gate[:,i] w_up[:,i]^T (Eq. 16),
    without building any D x D matrix: ||U_k||_F^2 = w_k^T (G o Uu) w_k, G = w_gate^T w_gate,
    Uu = w_up^T w_up, w_k = w_down[:, k]. [D]."""
    wg, wu, wd = (jnp.asarray(w, jnp.float32) for w in (w_gate, w_up, w_down))
    m = (wg.T @ wg) * (wu.T @ wu)                                     # [F, F]
    return jnp.sqrt(jnp.maximum(jnp.einsum("ik,ij,jk->k", wd, m, wd), 0.0))


def u_matrix(w_gate, w_up, w_down, k: int):
    """U_k [D, D] explicitly (for the few top channels): with SiLU = identity, FFN(h)_k = h^T U_k h."""
    return (jnp.asarray(w_gate) * jnp.asarray(w_down)[:, k][None, :]) @ jnp.asarray(w_up).T


def top_eigen(u) -> tuple[float, np.ndarray]:
    """Dominant eigenvalue (by magnitude) and unit eigenvector of S = (U + U^T) / 2 (Fig. 4)."""
    s = np.asarray(u, np.float64)
    vals, vecs = np.linalg.eigh((s + s.T) / 2)
    i = int(np.argmax(np.abs(vals)))
    return float(vals[i]), vecs[:, i]


def eigvec_alignment(vectors) -> float:
    """Mean |cos| between the dominant eigenvectors of different spike channels (~1 = a shared s*)."""
    v = np.asarray(vectors, np.float64)
    if len(v) < 2:
        return float("nan")
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    c = np.abs(v @ v.T)
    return float((c.sum() - np.trace(c)) / (len(v) * (len(v) - 1)))


def w_vo(wv, wo):
    """The first token's static map W_VO = sum_h W_V^(h) W_O^(h) [D, D] (Eq. 22): at position 0 a softmax
    head can only attend to itself, so the attention output is h~_0 @ W_VO. GQA: head h reads kv head
    h // (H / Hkv)."""
    wv, wo = jnp.asarray(wv, jnp.float32), jnp.asarray(wo, jnp.float32)
    group = wo.shape[0] // wv.shape[1]
    return jnp.einsum("dhk,hke->de", jnp.repeat(wv, group, axis=1), wo)
