"""Spike and sink statistics against independent float64 NumPy loops, and planted cases that must be found.

The functions run jitted in float32 (NumPy results on the host); references are float64 loops, compared
with rtol 1e-5 unless stated."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsink import stats
from jaxsink.model.layers import rms_normalize


def causal_probs(b, h, t, rng, sink_heads=(), extra_slot=False):
    """Causal softmax attention [b, h, t, t] from random logits; sink heads get +6 on key 0. With
    extra_slot every row also sees one extra logit whose mass is dropped (rows sum to < 1)."""
    logits = rng.normal(size=(b, h, t, t))
    logits[:, list(sink_heads), :, 0] += 6.0
    out = np.zeros_like(logits)
    for bi, hi, q in np.ndindex(b, h, t):
        row = list(logits[bi, hi, q, : q + 1]) + ([0.5] if extra_slot else [])
        e = np.exp(np.array(row) - max(row))
        out[bi, hi, q, : q + 1] = (e / e.sum())[: q + 1]
    return out


# ------------------------------------------------------------------ massive activations

def test_magnitude_stats_against_loops():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 3, 7, 5)) * rng.uniform(0.1, 10, size=(2, 3, 1, 1))    # [blocks, B, T, D]
    per_seq = stats.magnitude_stats(jnp.asarray(h, jnp.float32))
    for blk in range(2):
        for b in range(3):
            entries = sorted((abs(h[blk, b, t, c]), t, c) for t in range(7) for c in range(5))
            top3, median = [e[0] for e in entries[::-1][:3]], float(np.median([e[0] for e in entries]))
            np.testing.assert_allclose(per_seq["top3"][blk, b], top3, rtol=1e-5)
            np.testing.assert_allclose(per_seq["median"][blk, b], median, rtol=1e-5)
            np.testing.assert_allclose(per_seq["top1_over_median"][blk, b], top3[0] / median, rtol=1e-5)
            assert (per_seq["argmax_position"][blk, b], per_seq["argmax_channel"][blk, b]) == entries[-1][1:]


@pytest.mark.parametrize("criterion", [stats.SpikeCriterion(), stats.SpikeCriterion(50.0, 200.0),
                                       stats.SpikeCriterion.relative()])
def test_spike_masks_against_loops(criterion):
    rng = np.random.default_rng(1)
    b, t, d = 3, 6, 8
    h = rng.normal(size=(b, t, d))
    h[0, 0, 2], h[0, 4, 2], h[0, 0, 5] = 3000.0, -4000.0, -150.0     # channel 2: largest massive entry < 0
    h[1, 3, 6] = 120.0
    h[2, 1, 1] = 30.0
    got = stats.spike_masks(jnp.asarray(h, jnp.float32), criterion)
    entries = np.asarray(stats.massive_mask(jnp.asarray(h, jnp.float32), criterion))
    for bi in range(b):
        median = float(np.median(np.abs(h[bi]).ravel()))
        ref = np.zeros((t, d), bool)
        for ti, ci in np.ndindex(t, d):
            v = abs(h[bi, ti, ci])
            ref[ti, ci] = v > criterion.abs_threshold and v > criterion.rel_factor * median
        np.testing.assert_array_equal(entries[bi], ref)
        for ci in range(d):
            flagged = [h[bi, ti, ci] for ti in range(t) if ref[ti, ci]]
            assert got["channels"][bi, ci] == bool(flagged)
            assert got["channel_sign"][bi, ci] == (np.sign(max(flagged, key=abs)) if flagged else 0)
        for ti in range(t):
            assert got["tokens"][bi, ti] == ref[ti].any()
    if criterion == stats.SpikeCriterion():
        assert stats.mask_indices(got["channels"]) == [2] and stats.mask_indices(got["tokens"]) == [0, 4]
        assert got["channel_sign"][0, 2] == -1


def test_no_spike_in_gaussian_activations():
    h = jnp.asarray(np.random.default_rng(2).normal(size=(2, 64, 128)), jnp.float32)
    for criterion in (stats.SpikeCriterion(), stats.SpikeCriterion.relative()):
        assert not np.asarray(stats.massive_mask(h, criterion)).any()


def planted_spike(n_blocks=12, b=4, t=16, d=32, seed=3):
    """+5000 in channel 3 and -5000 in channel 7 at token 0: written by block 4, cancelled by block 11."""
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(b, t, d))
    outputs = rng.normal(scale=0.3, size=(n_blocks, b, t, d))
    outputs[3, :, 0, [3, 7]] += np.array([5000.0, -5000.0])[:, None]
    outputs[10, :, 0, [3, 7]] -= np.array([5000.0, -5000.0])[:, None]
    residual = embedding + np.cumsum(outputs, axis=0)
    return embedding, outputs, residual


def test_planted_spike_is_found_with_its_channels_token_and_blocks():
    embedding, outputs, residual = planted_spike()
    masks = stats.spike_masks(jnp.asarray(residual, jnp.float32))        # [blocks, B, ...]
    assert stats.block_indices(masks["tokens"].any(axis=(1, 2))) == list(range(4, 11))
    assert stats.mask_indices(masks["channels"]) == [3, 7]
    assert stats.mask_indices(masks["tokens"]) == [0]
    assert (masks["channel_sign"][5][:, [3, 7]] == [1, -1]).all()

    spike = (slice(None), slice(None), 0, [3, 7])
    values = lambda x: x[spike].mean(axis=1)                                        # noqa: E731
    assert stats.life_cycle_blocks(values(residual), values(outputs), embedding[:, 0, [3, 7]].mean(0)) == ([4], [11])
    assert stats.life_cycle_blocks(values(residual)[:, 1], values(outputs)[:, 1]) == ([4], [11])

    per_seq = stats.magnitude_stats(jnp.asarray(residual, jnp.float32))             # [blocks, B]
    assert (per_seq["argmax_position"][3:10] == 0).all()
    assert 4990 < float(stats.spike_top1(per_seq["top3"][..., 0])) < 5010


def test_life_cycle_with_two_step_up_and_two_step_down_blocks():
    """Spike built by blocks 4 and 6 and removed by blocks 10 and 11; later noise must not count."""
    out = np.random.default_rng(4).normal(scale=1.0, size=14)
    out[[3, 5]] += 2500.0
    out[[9, 10]] -= 2500.0
    assert stats.life_cycle_blocks(np.cumsum(out), out) == ([4, 6], [10, 11])
    assert stats.life_cycle_blocks(np.zeros(6), np.zeros(6)) == ([], [])


def test_life_cycle_rules_against_loop():
    """The documented rules, checked on random vectors against a plain loop."""
    rng = np.random.default_rng(5)
    for _ in range(5):
        r, o, r0, frac = rng.normal(size=(9, 2)) * 10, rng.normal(size=(9, 2)) * 10, rng.normal(size=2), 0.3
        up, down = (np.asarray(m) for m in stats.life_cycle_masks(r, o, r0, frac))
        norms = [math.hypot(*v) for v in r]
        p = int(np.argmax(norms))
        for i in range(9):
            before = r0 if i == 0 else r[i - 1]
            nb = math.hypot(*before)
            assert up[i] == (i <= p and float(np.dot(o[i], r[p])) / norms[p] >= frac * norms[p])
            assert down[i] == (i > p and nb >= frac * norms[p] and float(np.dot(o[i], before)) / nb <= -frac * nb)


# ------------------------------------------------------------------ sinks

def test_head_stats_against_loops():
    b, h, t, eps = 2, 4, 12, 0.3
    a = causal_probs(b, h, t, np.random.default_rng(6), sink_heads=(1, 3), extra_slot=True)
    got = stats.head_stats(jnp.asarray(a, jnp.float32), eps)
    for bi, hi in np.ndindex(b, h):
        alpha = [sum(a[bi, hi, q, k] for q in range(t)) / t for k in range(t)]
        np.testing.assert_allclose(got["alpha_first_half"][bi, hi], alpha[: t // 2], rtol=1e-5)
        assert got["is_sink"][bi, hi] == (max(alpha[: t // 2]) > eps)
        np.testing.assert_allclose(got["first_token_mass"][bi, hi], alpha[0], rtol=1e-5)
        assert got["gu_sink1"][bi, hi] == (alpha[0] > eps)
        dists = []
        for q in range(1, t):
            mass = sum(a[bi, hi, q, k] for k in range(1, q + 1))
            dists.append(sum(a[bi, hi, q, k] / mass * (q - k) for k in range(1, q + 1)))
        np.testing.assert_allclose(got["mean_distance"][bi, hi], np.mean(dists), rtol=1e-5)
    assert got["is_sink"][:, [1, 3]].all() and not got["is_sink"][:, [0, 2]].any()


def test_sink_ratio_is_per_sequence_then_mean():
    flags = np.random.default_rng(7).random((3, 4, 5)) > 0.6                       # [layers, B, H]
    per_seq = [sum(flags[l, b, h] for l in range(3) for h in range(5)) / 15 for b in range(4)]
    np.testing.assert_allclose(np.asarray(stats.sink_ratio(flags, per_sequence=True)), per_seq, rtol=1e-6)
    np.testing.assert_allclose(float(stats.sink_ratio(flags)), np.mean(per_seq), rtol=1e-6)


def test_uniform_causal_attention_has_no_sink():
    """A[t, k] = 1/(t+1): alpha_1 = H_T / T ~ 0.074 at T = 64 (the largest alpha), so no head is a sink."""
    t = 64
    a = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    got = stats.head_stats(jnp.asarray(np.broadcast_to(a, (2, 3, t, t)), jnp.float32))
    np.testing.assert_allclose(got["first_token_mass"], sum(1 / n for n in range(1, t + 1)) / t, rtol=1e-5)
    np.testing.assert_allclose(got["max_alpha_first_half"], got["first_token_mass"])
    assert float(stats.sink_ratio(got["is_sink"][None])) == 0.0
    assert float(stats.sink_ratio(got["gu_sink1"][None])) == 0.0
    # renormalised over keys 1..t the distances are uniform on 0..t-1: mean (t-1)/2, averaged over t >= 1
    np.testing.assert_allclose(got["mean_distance"], np.mean([(q - 1) / 2 for q in range(1, t)]), rtol=1e-5)


@pytest.mark.parametrize("key, flagged", [(3, True), (4, False)])
def test_sink_window_is_the_first_half(key, flagged):
    """T = 8: the window is 1-based k <= 4, i.e. 0-based key 3 is inside and key 4 outside. Queries from
    `key` on attend to it (alpha > 0.3); earlier queries attend to themselves (alpha 1/8)."""
    t = 8
    a = np.zeros((1, 1, t, t))
    for q in range(t):
        a[0, 0, q, min(q, key)] = 1.0
    got = stats.head_stats(jnp.asarray(a, jnp.float32))
    assert got["is_sink"][0, 0] == flagged


def block_probs(q, k, start, size):
    """Causal softmax rows start..start+size-1 from q, k [B, H, T, dh], with one extra always-visible
    logit whose mass is dropped (rows sum to < 1); `start` may be traced."""
    t = k.shape[2]
    logits = jnp.einsum("bhqd,bhkd->bhqk", jax.lax.dynamic_slice_in_dim(q, start, size, axis=2), k)
    logits = jnp.where((start + jnp.arange(size))[:, None] >= jnp.arange(t)[None], logits, -jnp.inf)
    full = jnp.concatenate([logits, jnp.zeros(logits.shape[:-1] + (1,))], -1)
    return jax.nn.softmax(full, -1)[..., :t]


@pytest.mark.parametrize("block", [5, 6, 20, 64])
def test_blockwise_equals_dense_under_jit(block):
    """Blocks that divide T, that do not (the last one overlaps), and one block of all of T (or more)."""
    rng = np.random.default_rng(8)
    b, h, t, dh = 2, 3, 20, 4
    q, k = jnp.asarray(rng.normal(size=(2, b, h, t, dh)) * 2, jnp.float32)
    dense = stats.head_stats(block_probs(q, k, 0, t))
    blocked = jax.jit(lambda q_, k_: stats.head_stats_blockwise(
        lambda start, size: block_probs(q_, k_, start, size), t, block))(q, k)
    assert dense.keys() == blocked.keys()
    for name in dense:
        np.testing.assert_allclose(np.asarray(blocked[name]), np.asarray(dense[name]), rtol=1e-5, atol=1e-7)


def test_blockwise_memory_grows_with_the_block_not_t_squared():
    """XLA's temporary memory: one [H, block, T] block live at a time, vs the [H, T, T] probabilities."""
    t, block = 512, 32
    q = k = jnp.zeros((1, 2, t, 8), jnp.float32)

    def temp_bytes(fn):
        return jax.jit(fn).lower(q, k).compile().memory_analysis().temp_size_in_bytes

    dense = temp_bytes(lambda q_, k_: stats.head_stats(block_probs(q_, k_, 0, t)))
    blocked = temp_bytes(lambda q_, k_: stats.head_stats_blockwise(
        lambda start, size: block_probs(q_, k_, start, size), t, block))
    assert dense >= 2 * t * t * 4 and blocked < 8 * 2 * block * t * 4


def test_distance_by_sink_against_loop():
    rng = np.random.default_rng(9)
    dist, flags = rng.uniform(0, 10, size=(2, 3, 4)), rng.random((2, 3, 4)) > 0.5
    dist[0, 0, 0] = np.nan
    got = stats.distance_by_sink(dist, flags)
    for name, want in (("sink", True), ("non_sink", False)):
        vals = [dist[i] for i in np.ndindex(dist.shape) if flags[i] == want and not np.isnan(dist[i])]
        np.testing.assert_allclose(float(got[name]), np.mean(vals), rtol=1e-5)
    assert np.isnan(float(stats.distance_by_sink(dist, np.zeros_like(flags))["sink"]))


def test_effective_rank_against_numpy():
    rng = np.random.default_rng(10)
    s_star = rng.normal(size=(16, 2))
    rank1 = np.outer(rng.normal(size=40), rng.normal(size=16)) + 1e-4 * rng.normal(size=(40, 16))
    rank2 = rng.normal(size=(40, 2)) @ s_star.T
    keys = np.stack([rank1, rank2, rng.normal(size=(40, 16))])                         # [heads, N, dh]
    got = stats.effective_rank(jnp.asarray(keys, jnp.float32))
    for i, x in enumerate(keys):
        s2 = np.linalg.svd(x, compute_uv=False) ** 2
        need, acc = 0, 0.0
        while acc < 0.99 * s2.sum():
            acc += s2[need]
            need += 1
        assert got["rank"][i] == need
        np.testing.assert_allclose(got["participation_ratio"][i], s2.sum() ** 2 / (s2 ** 2).sum(), rtol=1e-4)
    assert list(got["rank"][:2]) == [1, 2] and got["rank"][2] >= 14


# ------------------------------------------------------------------ normalised spike tokens

@settings(max_examples=30, deadline=None)
@given(st.sampled_from([2, 5, 64]), st.floats(-1e6, 1e6), st.integers(0, 2 ** 31 - 1))
def test_rmsnorm_is_bounded_by_sqrt_d(d, spike, seed):
    """Eq. 23: |RMSNorm(h)_i| <= sqrt(D) for any h, including one huge channel."""
    h = np.random.default_rng(seed).normal(size=(3, d))
    h[:, 0] += spike
    u = np.asarray(rms_normalize(jnp.asarray(h, jnp.float32), 1e-12), np.float64)    # the model's RMSNorm
    assert np.all(np.abs(u) <= np.sqrt(d) * (1 + 1e-6))
    np.testing.assert_allclose(np.sqrt(np.mean(u ** 2, -1)), 1.0, rtol=1e-5)
    assert np.all(np.asarray(stats.multi_hotness(jnp.asarray(h, jnp.float32))["peak_over_bound"]) <= 1 + 1e-6)


def test_near_constancy_and_multi_hotness_against_loops():
    rng = np.random.default_rng(11)
    d, n = 32, 6
    spikes = rng.normal(size=(n, d))
    spikes[:, [2, 9]] += np.array([3000.0, -1500.0])                                # fixed ratio, Eq. 24-25
    v = np.stack([rng.normal(size=(n, d)), spikes])                                 # [blocks, N, D]
    cos = np.asarray(stats.mean_pairwise_cosine(jnp.asarray(v, jnp.float32)))
    hot = stats.multi_hotness(jnp.asarray(v, jnp.float32), k=2)
    for blk in range(2):
        u = [x * math.sqrt(d) / np.linalg.norm(x) for x in v[blk]]
        pairs = [u[i] @ u[j] / (np.linalg.norm(u[i]) * np.linalg.norm(u[j]))
                 for i in range(n) for j in range(n) if i != j]
        np.testing.assert_allclose(cos[blk], np.mean(pairs), rtol=1e-4, atol=1e-6)
        for i in range(n):
            sq = sorted(u[i] ** 2, reverse=True)
            np.testing.assert_allclose(hot["topk_energy"][blk, i], sum(sq[:2]) / sum(sq), rtol=1e-5)
            np.testing.assert_allclose(hot["participation_ratio"][blk, i], sum(sq) ** 2 / sum(x * x for x in sq),
                                       rtol=1e-5)
            np.testing.assert_allclose(hot["peak_over_bound"][blk, i], math.sqrt(sq[0] / sum(sq)), rtol=1e-5)
    assert cos[1] > 0.999 and abs(cos[0]) < 0.3
    assert (hot["topk_energy"][1] > 0.999).all() and (hot["participation_ratio"][1] < 2).all()
    assert np.isnan(float(stats.mean_pairwise_cosine(jnp.ones((1, d)))))



def test_host_calls_return_numpy_and_traced_calls_compose():
    h = jnp.asarray(np.random.default_rng(12).normal(size=(3, 2, 8, 16)), jnp.float32)
    host = stats.magnitude_stats(h)
    assert all(isinstance(x, np.ndarray) for x in host.values())
    traced = jax.jit(lambda x: stats.spike_top1(stats.magnitude_stats(x)["top3"][..., 0]))(h)
    assert isinstance(traced, jax.Array)
    np.testing.assert_allclose(float(traced), float(stats.spike_top1(host["top3"][..., 0])), rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 37, 4096])
def test_sort_free_median_equals_numpy(n):
    """The bisection median (used instead of jnp.median's slow CPU sort) is exact: odd and even lengths,
    repeated values, zeros, inf and NaN, on fresh random heavy-tailed inputs."""
    from jaxsink.stats.activations import nonnegative_median
    rng = np.random.default_rng(n)
    a = np.abs(rng.standard_cauchy(size=(6, n))).astype(np.float32)
    a[1] = a[1, 0]                                  # all equal
    a[2, : n // 2 + 1] = 0.0                        # half zeros
    a[3, -1] = np.inf
    a[4, 0] = np.nan
    got = np.asarray(nonnegative_median(jnp.asarray(a)))
    np.testing.assert_array_equal(got, np.median(a, axis=-1).astype(np.float32))


# ------------------------------------------------------------------ attention without normalisation (Gu et al. §7.4)

def sigmoid_causal(b, h, t, rng, sink_heads=()):
    """Causal sigmoid attention weights (rows do not sum to 1) from N(0, 1) logits; sink heads get +6 on
    key 0 and -6 on every other key, the only way a sigmoid head can put most of a row on one key."""
    logits = rng.normal(size=(b, h, t, t))
    logits[:, list(sink_heads), :, 0] += 6.0
    logits[:, list(sink_heads), :, 1:] -= 6.0
    return np.tril(1.0 / (1.0 + np.exp(-logits)))


def test_proxy_probs_against_numpy():
    a = sigmoid_causal(2, 3, 10, np.random.default_rng(11))
    a[0, 1, 4] = 0.0                                                     # a row with no mass stays zero
    want = np.zeros_like(a)
    for bi, hi, q in np.ndindex(2, 3, 10):
        total = sum(a[bi, hi, q, k] for k in range(q + 1))
        if total > 0:
            want[bi, hi, q, : q + 1] = [a[bi, hi, q, k] / total for k in range(q + 1)]
    got = np.asarray(stats.proxy_probs(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(stats.sink_view(a, "softmax"), a)      # normalised kinds are read as they are


def test_sigmoid_sinks_are_read_through_proxy_scores():
    """Raw sigmoid weights of random logits average about 0.5 on key 0, so read raw every head would be a
    sink; through the proxy only the planted heads are (T = 64, as in the paper)."""
    a = sigmoid_causal(2, 4, 64, np.random.default_rng(12), sink_heads=(2,))
    raw = stats.head_stats(jnp.asarray(a, jnp.float32))
    assert raw["is_sink"].all()
    got = stats.head_stats(stats.sink_view(jnp.asarray(a, jnp.float32), "sigmoid"))
    assert got["is_sink"][:, 2].all() and not got["is_sink"][:, [0, 1, 3]].any()
    np.testing.assert_allclose(float(stats.sink_ratio(got["is_sink"][None])), 0.25)
