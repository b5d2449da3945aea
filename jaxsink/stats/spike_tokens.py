"""Spike tokens as the paper uses them: the (prompt, position) pairs that carry a massive activation, and the
statistics measured over them: near-constancy of their normalised vectors (Eq. 25, Fig. 5), the rank of
the sink keys they produce (App. A), and every rise-fall cycle of the spike channels (§3.1.1).

Why not position 0 across prompts: with a BOS token there, position 0 is the same token attending only to
itself in every prompt, so its cosine is 1 and its key rank is 1 by construction (review P1.1). The spike
tokens of real prompts (and, from the vocabulary probe, many different ids at position 0) vary.
Host functions of NumPy arrays.
"""
from __future__ import annotations

import numpy as np

MAX_PAIRS = 512          # pairs kept for the pairwise statistics (evenly spaced when there are more)


def spike_pairs(token_mask, max_pairs: int = MAX_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, position) index arrays of the flagged tokens of token_mask [N, T] (in row-major order),
    thinned evenly to at most `max_pairs`."""
    n, t = np.nonzero(np.asarray(token_mask, bool))
    if len(n) > max_pairs:
        keep = np.unique(np.linspace(0, len(n) - 1, max_pairs).astype(int))
        n, t = n[keep], t[keep]
    return n, t


def mean_pairwise_cosine(v) -> float | None:
    """Mean cosine over distinct pairs of the rows of v [M, D] (float64); None for M < 2. RMSNorm without
    a learned scale only rescales each row, so this is the near-constancy of RMSNorm(v) (Eq. 25)."""
    v = np.asarray(v, np.float64)
    if len(v) < 2:
        return None
    u = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)
    c = u @ u.T
    m = len(v)
    return float((c.sum() - np.trace(c)) / (m * (m - 1)))


def participation_rank(x) -> dict | None:
    """Effective dimension of the rows of x [M, d]: number of singular values holding 99% of the squared
    Frobenius norm, and the participation ratio (sum s^2)^2 / sum s^4 (no centring: the shared direction is
    the point). None for M < 2."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return None
    s2 = np.linalg.svd(x, compute_uv=False) ** 2
    cum = np.cumsum(s2) / s2.sum()
    return {"rank": int(1 + np.sum(cum < 0.99)), "participation_ratio": float(s2.sum() ** 2 / np.sum(s2 ** 2)),
            "vectors": int(len(x))}


def life_cycles(residual, outputs, initial=None, frac: float = 0.25, noise: float = 0.01) -> list[dict]:
    """Every rise-fall cycle of the spike channels, residual/outputs [n_blocks] or [n_blocks, C] (block i+1
    at row i; `initial` the embedding's value, default 0). A block is a step-up when the residual grows
    through it, reaches at least `noise` x the global peak (smaller rises are noise), and its output
    supplies at least `frac` of the new residual (its projection on it); a block is a step-down when it
    undoes at least `frac` of the residual it receives while a spike is there (||r_{i-1}|| >= frac x the
    cycle's peak). A cycle opens at its first step-up and closes when the residual falls below `frac` x
    its peak. The first version took only the global peak, so an earlier cycle undone before it (SmolLM2
    block 6, undone by blocks 18-22 before block 24) was missed (review P2.7). Returns [{"step_up": [...],
    "step_down": [...], "peak_block": int, "peak": float}] with 1-based blocks."""
    r = np.asarray(residual, np.float64)
    o = np.asarray(outputs, np.float64)
    if r.ndim == 1:
        r, o = r[:, None], o[:, None]
    before = np.concatenate([np.zeros_like(r[:1]) if initial is None else np.reshape(initial, (1, -1)), r[:-1]])
    norms = np.linalg.norm(r, axis=-1)
    floor = noise * norms.max() if norms.max() > 0 else np.inf
    cycles, cur = [], None
    for i in range(len(r)):
        nb = np.linalg.norm(before[i])
        if cur is not None and nb >= frac * cur["peak"] and o[i] @ before[i] / max(nb, 1e-300) <= -frac * nb:
            cur["step_down"].append(i + 1)
        rises = norms[i] > nb and norms[i] >= floor and (o[i] @ r[i]) / max(norms[i], 1e-300) >= frac * norms[i]
        if rises and (cur is None or cur["closed"]):
            cur = {"step_up": [], "step_down": [], "peak_block": i + 1, "peak": 0.0, "closed": False}
            cycles.append(cur)
        if rises:
            cur["step_up"].append(i + 1)
        if cur is not None and not cur["closed"]:
            if norms[i] > cur["peak"]:
                cur["peak"], cur["peak_block"] = float(norms[i]), i + 1
            if norms[i] < frac * cur["peak"]:
                cur["closed"] = True
    return [{k: c[k] for k in ("step_up", "step_down", "peak_block", "peak")} for c in cycles]
