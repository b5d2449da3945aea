"""Mechanism analysis (U_k, S_k, SiLU, W_VO) against independent float64 NumPy loops.

The functions run in float32; references are float64, compared with rtol 1e-4 unless stated."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsink import stats


def explicit_u(w_gate, w_up, w_down, k):
    """U_k = sum_i w_down[i, k] w_gate[:, i] w_up[:, i]^T, entry by entry."""
    d, f = w_gate.shape
    u = np.zeros((d, d))
    for i in range(f):
        for a in range(d):
            for b in range(d):
                u[a, b] += w_down[i, k] * w_gate[a, i] * w_up[b, i]
    return u


def ffn_identity_silu(h, w_gate, w_up, w_down):
    """SwiGLU with SiLU replaced by the identity, by loops."""
    d, f = w_gate.shape
    hidden = [sum(h[a] * w_gate[a, i] for a in range(d)) * sum(h[a] * w_up[a, i] for a in range(d)) for i in range(f)]
    return np.array([sum(hidden[i] * w_down[i, k] for i in range(f)) for k in range(d)])


def test_uk_norm_formula_u_matrix_and_quadratic_identity():
    d, f = 5, 9
    rng = np.random.default_rng(0)
    wg, wu, wd = rng.normal(size=(d, f)), rng.normal(size=(d, f)), rng.normal(size=(f, d))
    norms = np.asarray(stats.uk_frobenius(wg, wu, wd))
    us = np.asarray(stats.u_matrix(wg, wu, wd, np.arange(d)))                      # [C, D, D]
    h = rng.normal(size=d)
    ffn = ffn_identity_silu(h, wg, wu, wd)
    for k in range(d):
        u = explicit_u(wg, wu, wd, k)
        np.testing.assert_allclose(norms[k], np.linalg.norm(u), rtol=1e-4)
        np.testing.assert_allclose(us[k], u, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(stats.u_matrix(wg, wu, wd, k)), u, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(h @ u @ h, ffn[k], rtol=1e-10)                   # Eq. 15-17, float64
        s = np.asarray(stats.symmetric_part(jnp.asarray(u)))
        np.testing.assert_allclose(h @ s @ h, ffn[k], rtol=1e-4)


def test_top_eigen_against_numpy():
    rng = np.random.default_rng(1)
    u = rng.normal(size=(3, 6, 6))
    vals, vecs = (np.asarray(x) for x in stats.top_eigen(jnp.asarray(u, jnp.float32)))
    for c in range(3):
        w, v = np.linalg.eig((u[c] + u[c].T) / 2)
        i = int(np.argmax(np.abs(w)))
        ref = np.real(v[:, i])
        ref *= np.sign(ref[np.argmax(np.abs(ref))])
        np.testing.assert_allclose(vals[c], np.real(w[i]), rtol=1e-4)
        np.testing.assert_allclose(vecs[c], ref, atol=1e-4)


def amplifier(d=12, f=40, spike_channels=(2, 5), seed=2):
    """Weights with a planted super weight: units 0 and 1 have w_gate = w_up = 4 s* (collinear) and huge
    w_down entries into the spike channels, so S_k of those channels is dominated by s* s*^T."""
    rng = np.random.default_rng(seed)
    s_star = rng.normal(size=d)
    s_star /= np.linalg.norm(s_star)
    wg, wu, wd = (rng.normal(size=s, scale=0.1) for s in ((d, f), (d, f), (f, d)))
    wg[:, :2] = wu[:, :2] = 4 * s_star[:, None]
    wd[:2] = 0.0
    for j, k in enumerate(spike_channels):
        wd[j, k] = 50.0 * (1 if j == 0 else -0.5)
    return wg, wu, wd, s_star


def test_planted_amplifier_has_one_dominant_eigenvalue_and_a_shared_trigger():
    wg, wu, wd, s_star = amplifier()
    norms = np.asarray(stats.uk_frobenius(wg, wu, wd))
    assert set(np.argsort(norms)[-2:]) == {2, 5}
    vals, vecs = stats.top_eigen(stats.u_matrix(wg, wu, wd, np.array([2, 5])))
    np.testing.assert_allclose(np.abs(np.asarray(vecs) @ s_star), 1.0, atol=1e-3)
    assert float(stats.eigvec_alignment(vecs)) > 0.999
    np.testing.assert_allclose(np.asarray(vals), [16 * 50.0, -16 * 25.0], rtol=0.02)  # lambda* = w_down * 4 * 4
    _, other = stats.top_eigen(stats.u_matrix(wg, wu, wd, np.array([0, 7, 9])))
    assert float(stats.eigvec_alignment(other)) < 0.9


def test_eigvec_alignment_against_loop():
    v = np.random.default_rng(3).normal(size=(4, 7))
    want = np.mean([abs(v[i] @ v[j]) / (np.linalg.norm(v[i]) * np.linalg.norm(v[j]))
                    for i in range(4) for j in range(4) if i != j])
    np.testing.assert_allclose(float(stats.eigvec_alignment(jnp.asarray(v, jnp.float32))), want, rtol=1e-5)
    assert float(stats.eigvec_alignment(np.stack([v[0], -v[0]]))) == pytest.approx(1.0)
    assert np.isnan(float(stats.eigvec_alignment(v[:1])))


def test_silu_identity_against_loop():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(3, 16)) * 3
    got = jax.tree.map(np.asarray, stats.silu_identity(jnp.asarray(z, jnp.float32)))
    for t in range(3):
        s = [x / (1 + math.exp(-x)) for x in z[t]]
        nz, ns = math.sqrt(sum(x * x for x in z[t])), math.sqrt(sum(x * x for x in s))
        np.testing.assert_allclose(got["cos"][t], sum(a * b for a, b in zip(z[t], s)) / (nz * ns), rtol=1e-5)
        np.testing.assert_allclose(got["norm_ratio"][t], ns / nz, rtol=1e-5)
    aligned = stats.silu_identity(jnp.asarray(np.abs(z) * 20 + 10, jnp.float32))     # large positive gate inputs
    np.testing.assert_allclose(np.asarray(aligned["cos"]), 1, atol=1e-5)
    np.testing.assert_allclose(np.asarray(aligned["norm_ratio"]), 1, atol=1e-3)


def test_fold_norm_scale_for_ffn_and_value_weights():
    rng = np.random.default_rng(5)
    d = 6
    gamma, x = rng.normal(size=d), rng.normal(size=(4, d))
    w2, w3 = rng.normal(size=(d, 8)), rng.normal(size=(d, 2, 3))
    f2, f3 = (np.asarray(w) for w in stats.fold_norm_scale(gamma, w2, w3))
    np.testing.assert_allclose(x @ f2, (x * gamma) @ w2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.einsum("td,dgk->tgk", x, f3), np.einsum("td,dgk->tgk", x * gamma, w3),
                               rtol=1e-4, atol=1e-5)


def causal_attention_loops(x, wq, wk, wv, wo):
    """Multi-head causal softmax attention (GQA: head h uses kv head h // (H // Hkv)) by loops, x [T, D]."""
    t, d = x.shape
    n_heads, dh, _ = wo.shape
    group = n_heads // wv.shape[1]
    out = np.zeros((t, d))
    for h in range(n_heads):
        g = h // group
        q, k, v = x @ wq[:, h], x @ wk[:, g], x @ wv[:, g]
        for i in range(t):
            logits = [q[i] @ k[j] / math.sqrt(dh) for j in range(i + 1)]
            e = [math.exp(s - max(logits)) for s in logits]
            o = sum(e[j] / sum(e) * v[j] for j in range(i + 1))
            out[i] += o @ wo[h]
    return out


@pytest.mark.parametrize("n_heads, kv_heads", [(1, 1), (4, 4), (4, 2)])
def test_first_token_output_is_the_static_map_w_vo(n_heads, kv_heads):
    """Eq. 22: position 0 attends only to itself (softmax over a single key), so out_0 = h~_0 @ W_VO."""
    rng = np.random.default_rng(6)
    d, dh, t = 8, 3, 4
    x = rng.normal(size=(t, d))
    wq = rng.normal(size=(d, n_heads, dh))
    wk, wv = rng.normal(size=(2, d, kv_heads, dh))
    wo = rng.normal(size=(n_heads, dh, d))
    out = causal_attention_loops(x, wq, wk, wv, wo)
    wvo = np.asarray(stats.w_vo(wv, wo), np.float64)
    ref = sum(wv[:, h // (n_heads // kv_heads)] @ wo[h] for h in range(n_heads))
    np.testing.assert_allclose(wvo, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[0], x[0] @ wvo, rtol=1e-4, atol=1e-5)
    assert not np.allclose(out[1], x[1] @ wvo, rtol=1e-3)                            # later positions mix

