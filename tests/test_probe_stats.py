"""Statistics against independent float64 NumPy loops, and planted cases that must be found."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsink.probe import stats

RNG = np.random.default_rng(0)


def causal_softmax(b, h, t, rng, sink_heads=()):
    logits = rng.normal(size=(b, h, t, t))
    for head in sink_heads:
        logits[:, head, :, 0] += 6.0
    logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_magnitude_stats_against_loops():
    h = RNG.normal(size=(3, 7, 5))
    got = jax.tree.map(np.asarray, stats.magnitude_stats(jnp.asarray(h, jnp.float32)))
    for b in range(3):
        vals = sorted((abs(h[b, t, c]), t, c) for t in range(7) for c in range(5))
        np.testing.assert_allclose(got["top3"][b], [v[0] for v in vals[::-1][:3]], rtol=1e-6)
        assert (got["argmax_position"][b], got["argmax_channel"][b]) == vals[-1][1:]
        np.testing.assert_allclose(got["median"][b], np.median([v[0] for v in vals]), rtol=1e-6)


def test_planted_spike_is_found_with_its_step_up_and_step_down_blocks():
    """A spike of 5000 in channels {3, 7} at token 0, injected by block 4 and cancelled by block 11."""
    b, t, d, n_blocks = 4, 16, 32, 12
    rng = np.random.default_rng(1)
    outputs = rng.normal(scale=0.3, size=(n_blocks, b, t, d))
    outputs[3][:, 0, 3], outputs[3][:, 0, 7] = 5000.0, -2500.0      # block 4 (step-up)
    outputs[10][:, 0, 3], outputs[10][:, 0, 7] = -5000.0, 2500.0    # block 11 (step-down)
    residual = np.cumsum(outputs, axis=0) + rng.normal(size=(b, t, d))
    crit = stats.SpikeCriterion()
    masks = [np.asarray(stats.massive_mask(jnp.asarray(residual[i], jnp.float32), crit)) for i in range(n_blocks)]
    spiking = [i + 1 for i, m in enumerate(masks) if m.any()]
    assert spiking == list(range(4, 11))
    assert set(np.nonzero(masks[5].any(axis=(0, 1)))[0]) == {3, 7}
    assert set(np.nonzero(masks[5].any(axis=(0, 2)))[0]) == {0}
    up, down = stats.life_cycle_blocks(residual[:, :, 0, 3].mean(1), outputs[:, :, 0, 3].mean(1))
    assert up == [4] and down == [11]
    top1 = np.stack([np.asarray(stats.magnitude_stats(jnp.asarray(r, jnp.float32))["top3"][:, 0]) for r in residual])
    assert 4900 < stats.spike_top1(top1) < 5100


def test_no_spike_in_gaussian_activations():
    h = jnp.asarray(RNG.normal(size=(2, 64, 128)), jnp.float32)
    assert not np.asarray(stats.massive_mask(h, stats.SpikeCriterion())).any()
    assert not np.asarray(stats.massive_mask(h, stats.SpikeCriterion.relative())).any()


def test_sink_statistics_against_loops():
    b, h, t, eps = 2, 4, 12, 0.3
    a = causal_softmax(b, h, t, np.random.default_rng(2), sink_heads=(1, 3))
    got = jax.tree.map(np.asarray, stats.head_stats(jnp.asarray(a, jnp.float32), eps))
    for bi in range(b):
        for hi in range(h):
            alpha = [sum(a[bi, hi, q, k] for q in range(t)) / t for k in range(t)]
            assert got["is_sink"][bi, hi] == (max(alpha[: t // 2]) > eps)
            np.testing.assert_allclose(got["first_token_mass"][bi, hi], alpha[0], rtol=1e-5)
            gu = sum(a[bi, hi, q, 0] for q in range(t)) / t
            np.testing.assert_allclose(got["gu_alpha1"][bi, hi], gu, rtol=1e-5)
            dists = []
            for q in range(1, t):
                mass = sum(a[bi, hi, q, k] for k in range(1, q + 1))
                dists.append(sum(a[bi, hi, q, k] * (q - k) for k in range(1, q + 1)) / mass)
            np.testing.assert_allclose(got["mean_distance"][bi, hi], np.mean(dists), rtol=1e-4)
    assert got["is_sink"][:, [1, 3]].all() and not got["is_sink"][:, [0, 2]].any()
    gu_all = np.asarray(stats.gu_importance(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(gu_all[0, 0, 5], a[0, 0, 5:, 5].sum() / (t - 5), rtol=1e-5)


def test_uniform_causal_attention_has_no_sink():
    t = 64
    a = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    flags = np.asarray(stats.sink_flags(stats.importance(jnp.asarray(a[None, None], jnp.float32))))
    assert not flags.any()
    np.testing.assert_allclose(a[:, 0].mean(), sum(1 / n for n in range(1, 65)) / 64)   # H_64 / 64 ~ 0.074


def test_sink_window_is_the_first_half():
    """A head whose mass sits on a key in the second half is not a sink head (max over k <= T/2 only)."""
    t = 8
    a = np.zeros((1, 1, t, t))
    for q in range(t):
        a[0, 0, q, min(q, 5)] = 1.0
    alpha = np.asarray(stats.importance(jnp.asarray(a, jnp.float32)))
    assert alpha[0, 0, 5] > 0.3 and not np.asarray(stats.sink_flags(jnp.asarray(alpha))).any()


def test_blockwise_equals_dense():
    a = jnp.asarray(causal_softmax(2, 3, 20, np.random.default_rng(3), sink_heads=(0,)), jnp.float32)
    dense = stats.head_stats(a)
    blocked = stats.head_stats_blockwise(lambda q0, q1: a[:, :, q0:q1], 20, block=6)
    for key in dense:
        np.testing.assert_allclose(np.asarray(blocked[key]), np.asarray(dense[key]), rtol=1e-5, atol=1e-6)


def test_rmsnorm_bound_sparsity_and_near_constancy():
    d = 64
    h = RNG.normal(size=(50, d))
    h[:, 5] += 1e6
    u = np.asarray(stats.rms_normalize(jnp.asarray(h)))
    assert np.all(np.abs(u) <= np.sqrt(d) + 1e-4)
    assert np.abs(u[:, 5]).min() > np.sqrt(d) * 0.999
    spikes = RNG.normal(size=(8, d))
    spikes[:, [2, 9]] += np.array([3000.0, -1500.0])
    assert float(stats.mean_pairwise_cosine(jnp.asarray(spikes))) > 0.999
    assert abs(float(stats.mean_pairwise_cosine(jnp.asarray(RNG.normal(size=(8, d)))))) < 0.2
    hot = stats.multi_hotness(stats.rms_normalize(jnp.asarray(spikes)), k=2)
    assert np.all(np.asarray(hot["topk_energy"]) > 0.999)
    assert np.all(np.asarray(hot["participation_ratio"]) < 2.0)


def test_effective_rank():
    rng = np.random.default_rng(4)
    keys = np.outer(rng.normal(size=40), rng.normal(size=16)) + 1e-4 * rng.normal(size=(40, 16))
    assert stats.effective_rank(keys)["rank_99"] == 1
    assert stats.effective_rank(rng.normal(size=(200, 16)))["rank_99"] >= 14


def test_uk_norm_formula_and_quadratic_identity():
    d, f = 6, 10
    rng = np.random.default_rng(5)
    wg, wu, wd = rng.normal(size=(d, f)), rng.normal(size=(d, f)), rng.normal(size=(f, d))
    norms = np.asarray(stats.uk_frobenius(wg, wu, wd))
    h = rng.normal(size=d)
    ffn_identity = ((h @ wg) * (h @ wu)) @ wd          # SwiGLU with SiLU replaced by the identity
    for k in range(d):
        u = np.zeros((d, d))
        for i in range(f):
            u += wd[i, k] * np.outer(wg[:, i], wu[:, i])
        np.testing.assert_allclose(norms[k], np.linalg.norm(u), rtol=1e-4)
        np.testing.assert_allclose(np.asarray(stats.u_matrix(wg, wu, wd, k)), u, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(h @ u @ h, ffn_identity[k], rtol=1e-8)
    val, vec = stats.top_eigen(np.outer(np.ones(d), np.ones(d)) * 3 + 0.01 * rng.normal(size=(d, d)))
    assert abs(val - 3 * d) < 0.1 and abs(abs(vec @ np.ones(d) / np.sqrt(d)) - 1) < 1e-3
    assert stats.eigvec_alignment([vec, -vec]) == pytest.approx(1.0)


def test_silu_identity():
    big = jnp.asarray(np.abs(RNG.normal(size=(4, 32))) * 50 + 10, jnp.float32)
    r = stats.silu_identity(big)
    assert np.allclose(np.asarray(r["cos"]), 1, atol=1e-5) and np.allclose(np.asarray(r["norm_ratio"]), 1, atol=1e-3)
    small = stats.silu_identity(jnp.asarray(RNG.normal(size=(4, 32)), jnp.float32))
    assert np.all(np.asarray(small["norm_ratio"]) < 0.9)


@pytest.mark.parametrize("h_heads, kv_heads", [(1, 1), (4, 4), (4, 2)])
def test_first_token_output_is_the_static_map_w_vo(h_heads, kv_heads):
    """Position 0 attends only to itself under causal softmax: output = h~_0 @ W_VO exactly (Eq. 22)."""
    from jaxsink.model import ModelSpec, build, collect, forward
    spec = ModelSpec(vocab_size=32, n_layers=1, d_model=16, n_heads=h_heads, n_kv_heads=kv_heads, d_head=4,
                     d_ff=32, position="rope")
    model = build(spec, seed=1)
    tokens = jnp.asarray(np.random.default_rng(6).integers(0, 32, size=(3, 5)))
    _, inter = forward(model, tokens, capture=("normed_input", "block_out"))
    c = collect(inter, spec.n_blocks)
    attn = model.blocks[0].mixer
    wvo = np.asarray(stats.w_vo(attn.wv[...], attn.wo[...]), np.float64)
    x0 = np.asarray(c["normed_input"][1], np.float64)[:, 0]
    np.testing.assert_allclose(np.asarray(c["block_out"][1])[:, 0], x0 @ wvo, rtol=1e-4, atol=1e-5)
