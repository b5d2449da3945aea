"""How spikes are made (paper §3.1.2-3.1.3): SiLU near identity, the SwiGLU FFN as a directional quadratic
amplifier (U_k, S_k, lambda*, s*), and the first token's static map W_VO.

Pure functions (`probe_jit`: traced under a caller's jit, NumPy from the host) of plain weight arrays in
the x @ W convention: w_gate, w_up [D, F], w_down [F, D], so FFN(h) = (silu(h @ w_gate) * (h @ w_up)) @
w_down; attention wv [D, Hkv, dh], wo [H, dh, D] (GQA: query head h reads kv head h // (H // Hkv)).
The paper's RMSNorm has no learned scale (Eq. 5): fold a model's scale gamma into the weights that read
the normalised input with `fold_norm_scale` first.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsink.stats.activations import off_diagonal_mean, pairwise_cosines, probe_jit


def _f32(w):
    return jnp.asarray(w).astype(jnp.float32)


@probe_jit
def fold_norm_scale(gamma, *weights):
    """gamma [D] folded into weights whose first axis is the input channel (w_gate, w_up [D, F];
    wv [D, Hkv, dh]): RMSNorm(h) * gamma @ W == RMSNorm(h) @ (gamma[:, None] * W). Returns a tuple."""
    g = _f32(gamma)
    return tuple(g.reshape(-1, *([1] * (jnp.ndim(w) - 1))) * _f32(w) for w in weights)


@probe_jit
def silu_identity(z) -> dict:
    """SiLU near identity (Fig. 2), per token: cos(z, SiLU(z)) and ||SiLU(z)|| / ||z|| for the gate
    pre-activation z = h~ @ w_gate [..., F]; both ~1 on spike tokens in step-up blocks."""
    z = _f32(z)
    s = jax.nn.silu(z)
    nz, ns = jnp.linalg.norm(z, axis=-1), jnp.linalg.norm(s, axis=-1)
    return {"cos": jnp.sum(z * s, -1) / jnp.maximum(nz * ns, 1e-30), "norm_ratio": ns / jnp.maximum(nz, 1e-30)}


@probe_jit
def uk_frobenius(w_gate, w_up, w_down):
    """||U_k||_F for every output channel k (Fig. 3) without any D x D matrix. With
    U_k = sum_i w_down[i, k] w_gate[:, i] w_up[:, i]^T (Eq. 16), ||U_k||_F^2 = w_k^T (G o Uu) w_k where
    w_k = w_down[:, k], G = w_gate^T w_gate and Uu = w_up^T w_up ([F, F]). Returns [D]."""
    wg, wu, wd = _f32(w_gate), _f32(w_up), _f32(w_down)
    gram = (wg.T @ wg) * (wu.T @ wu)
    return jnp.sqrt(jnp.maximum(jnp.einsum("ik,ij,jk->k", wd, gram, wd), 0.0))


@probe_jit
def u_matrix(w_gate, w_up, w_down, k):
    """U_k = sum_i w_down[i, k] w_gate[:, i] w_up[:, i]^T (Eq. 16), so that with SiLU = identity
    FFN(h)_k = h^T U_k h. k an int -> [D, D]; k an int array [C] (a few top channels) -> [C, D, D]."""
    wk = _f32(w_down)[:, jnp.asarray(k)]
    return jnp.einsum("di,i...,ei->...de", _f32(w_gate), wk, _f32(w_up))


@probe_jit
def symmetric_part(u):
    """S_k = (U_k + U_k^T) / 2 (Eq. 17): the same quadratic form h^T S_k h, with real eigenvalues."""
    return (u + jnp.swapaxes(u, -1, -2)) / 2


@probe_jit
def top_eigen(u):
    """Dominant eigenpair of S = (U + U^T) / 2 by |eigenvalue| (Fig. 4: lambda*, s*). u [..., D, D] ->
    (eigenvalue [...], unit eigenvector [..., D]); the eigenvector's sign is fixed so that its largest-|.|
    entry is positive (eigenvectors have no sign of their own; alignment uses |cos|)."""
    vals, vecs = jnp.linalg.eigh(symmetric_part(_f32(u)))
    i = jnp.argmax(jnp.abs(vals), axis=-1)
    val = jnp.take_along_axis(vals, i[..., None], -1)[..., 0]
    vec = jnp.take_along_axis(vecs, i[..., None, None], -1)[..., 0]
    big = jnp.take_along_axis(vec, jnp.argmax(jnp.abs(vec), -1)[..., None], -1)
    return val, vec * jnp.sign(big)


@probe_jit
def eigvec_alignment(vectors):
    """Shared trigger direction s*: mean |cos| over distinct pairs of the dominant eigenvectors of
    different spike channels, vectors [C, D] (~1 = one shared s*); NaN for C < 2."""
    return off_diagonal_mean(jnp.abs(pairwise_cosines(vectors)))


@probe_jit
def w_vo(wv, wo):
    """The first token's static map W_VO = sum_h W_V^(h) W_O^(h) [D, D] (Eq. 22). Under causal softmax the
    first query sees only itself, so its attention output is h~_0 @ W_VO for every prompt. GQA: query
    head h uses kv head h // (H // Hkv)."""
    wv, wo = _f32(wv), _f32(wo)
    return jnp.einsum("dhk,hke->de", jnp.repeat(wv, wo.shape[0] // wv.shape[1], axis=1), wo)
