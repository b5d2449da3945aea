"""How the first token is steered into a spike (paper §3.1.2-3.1.3), beyond lambda* alone (review P2.8-P2.9):

- `eigen_spectrum`: the eigenvalues of S_k = (U_k + U_k^T)/2 sorted by |.|, with the dominance
  lambda*/|lambda_2| that "lambda* dominates the rest" needs;
- `w_vo_affine`: the first token's attention map as the model computes it. Under causal softmax query 0
  sees only itself, so its attention output is (x0 @ W_V + b_V) @ W_O summed over heads, with x0 =
  RMSNorm(h0) * gamma: gamma folded into W_V gives W_VO acting on the scale-free RMSNorm(h0), and the value
  bias (Qwen2.5 has one) makes the map affine;
- `trigger_alignment`: |cos| of the first token's attention output with the trigger direction s* (the
  dominant eigenvector, sign-free) and the gain ||W_VO x + b|| / ||x||; `chance_cosine` is the mean |cos| of
  two random directions in D dimensions, sqrt(2 / (pi D)), the level an unrelated map reaches.
Host functions of NumPy arrays (float64).
"""
from __future__ import annotations

import math

import numpy as np


def eigen_spectrum(u) -> dict:
    """u [D, D] (U_k) -> eigenvalues of its symmetric part by decreasing |.|: lambda1, lambda2, dominance
    |lambda1| / |lambda2| (inf when lambda2 = 0), and the unit eigenvector s* of lambda1."""
    s = np.asarray(u, np.float64)
    vals, vecs = np.linalg.eigh((s + s.T) / 2)
    order = np.argsort(-np.abs(vals))
    l1, l2 = vals[order[0]], vals[order[1]] if len(vals) > 1 else 0.0
    vec = vecs[:, order[0]]
    vec = vec * np.sign(vec[np.argmax(np.abs(vec))])
    return {"lambda1": float(l1), "lambda2": float(l2),
            "dominance": float(abs(l1) / abs(l2)) if l2 else float("inf"), "vector": vec}


def w_vo_affine(wv, wo, gamma=None, bv=None) -> tuple[np.ndarray, np.ndarray]:
    """(W_VO [D, D], b_VO [D]) with x0 @ W_VO + b_VO = the first token's attention output (before any output
    gate), x0 = RMSNorm(h0) without scale. wv [D, Hkv, dh], wo [H, dh, D], gamma [D] (the input norm's
    scale, folded in), bv [Hkv, dh] (value bias). GQA: query head h reads kv head h // (H / Hkv)."""
    wv = np.asarray(wv, np.float64)
    wo = np.asarray(wo, np.float64)
    rep = wo.shape[0] // wv.shape[1]
    wv_h = np.repeat(wv, rep, axis=1)                               # [D, H, dh]
    if gamma is not None:
        wv_h = np.asarray(gamma, np.float64)[:, None, None] * wv_h
    w = np.einsum("dhk,hke->de", wv_h, wo)
    b = np.zeros(wo.shape[-1]) if bv is None else np.einsum("hk,hke->e", np.repeat(np.asarray(bv, np.float64), rep, 0), wo)
    return w, b


def trigger_alignment(x0, w, b, s_star) -> dict:
    """x0 [D] the scale-free normalised first-token input; returns |cos(x0 @ W + b, s*)|, the gain
    ||x0 @ W + b|| / ||x0||, and the chance level of |cos| in D dimensions."""
    x0 = np.asarray(x0, np.float64)
    y = x0 @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    s = np.asarray(s_star, np.float64)
    cos = abs(float(y @ s)) / max(float(np.linalg.norm(y) * np.linalg.norm(s)), 1e-300)
    return {"abs_cos_with_s_star": cos, "gain": float(np.linalg.norm(y) / max(np.linalg.norm(x0), 1e-300)),
            "chance_abs_cos": chance_cosine(len(x0))}


def chance_cosine(d: int) -> float:
    """E|cos| of two independent random directions in d dimensions, ~ sqrt(2 / (pi d)) for large d."""
    return math.sqrt(2 / (math.pi * d))


def channels_by_magnitude(channels, values, k: int) -> list[int]:
    """The k spike channels with the largest |value| (e.g. the residual at the spike token at the peak
    block), largest first; the first version took the k lowest channel indices."""
    channels = np.asarray(channels, int)
    order = np.argsort(-np.abs(np.asarray(values, np.float64)), kind="stable")
    return channels[order][:k].tolist()
