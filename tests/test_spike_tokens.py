"""Spike-token statistics, life cycles and the trigger analysis against NumPy references and planted cases
(review P2.7-P2.10)."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsink import stats
from jaxsink.model import ModelSpec, apply, build, collect, split
from jaxsink.model.loaded import LoadedModel
from jaxsink.probe import pipeline
from jaxsink.stats.spike_tokens import life_cycles, mean_pairwise_cosine, participation_rank, spike_pairs
from jaxsink.stats.trigger import channels_by_magnitude, eigen_spectrum, trigger_alignment, w_vo_affine


def test_a_second_rise_fall_cycle_is_found():
    """Block 2 raises the channel to 100 and block 4 undoes it; block 6 raises it to 500 and block 8
    undoes it (SmolLM2: block 6 raised, blocks 18-22 undo, then block 24). The first version's rule
    (global peak only) reports block 6 alone."""
    o = np.array([1, 99, 0, -95, 1, 495, 0, -490, 0.0])
    r = np.cumsum(o)
    cycles = life_cycles(r, o)
    assert [(c["step_up"], c["step_down"], c["peak_block"]) for c in cycles] == [([2], [4], 2), ([6], [8], 6)]
    assert stats.life_cycle_blocks(r, o) == ([6], [8])
    assert life_cycles(np.full(9, 1e-3), np.full(9, 1e-3) * 0) == []


def test_pairwise_cosine_and_rank_against_loops():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 5))
    ref = np.mean([v[i] @ v[j] / np.linalg.norm(v[i]) / np.linalg.norm(v[j])
                   for i in range(6) for j in range(6) if i != j])
    assert mean_pairwise_cosine(v) == pytest.approx(ref, rel=1e-12) and mean_pairwise_cosine(v[:1]) is None
    same = np.tile(rng.normal(size=(1, 5)), (4, 1))
    assert participation_rank(same)["rank"] == 1 and participation_rank(np.eye(5))["rank"] == 5
    n, t = spike_pairs(np.array([[1, 0, 1], [0, 1, 0]], bool))
    assert n.tolist() == [0, 0, 1] and t.tolist() == [0, 2, 1]
    assert len(spike_pairs(np.ones((40, 40), bool), max_pairs=100)[0]) == 100


def test_eigen_dominance_on_a_planted_quadratic_form():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    u = 10 * np.outer(q[:, 0], q[:, 0]) - 2 * np.outer(q[:, 1], q[:, 1]) + 0.5 * np.outer(q[:, 2], q[:, 2])
    e = eigen_spectrum(u + np.triu(np.ones((6, 6))) - np.tril(np.ones((6, 6))))   # antisymmetric part ignored
    assert e["lambda1"] == pytest.approx(10) and e["lambda2"] == pytest.approx(-2) and e["dominance"] == pytest.approx(5)
    assert abs(e["vector"] @ q[:, 0]) == pytest.approx(1)
    assert channels_by_magnitude([3, 7, 9], [1.0, -50.0, 20.0], 2) == [7, 9]


def test_w_vo_with_gamma_and_value_bias_is_the_first_tokens_attention_output():
    """Under causal softmax query 0 sees only itself: its attention output must equal RMSNorm(h0) @ W_VO + b,
    with the norm scale folded and the value bias (Qwen2.5-style qkv_bias), checked against the model."""
    spec = ModelSpec(vocab_size=20, n_layers=1, d_model=8, n_heads=4, n_kv_heads=2, d_head=4, d_ff=12,
                     max_seq_len=8, qkv_bias=True)
    graphdef, params = split(build(spec, 3))
    rng = np.random.default_rng(3)
    params["blocks"][0]["norm_in"]["scale"] = jnp.asarray(rng.uniform(0.5, 2.0, 8), jnp.float32)
    params["blocks"][0]["mixer"]["bv"] = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    tokens = jnp.asarray([[5, 1, 2, 3]])
    _, inter = apply(graphdef, params, tokens, ("block_out",))
    out0 = np.asarray(collect(inter, 2)["block_out"][1])[0, 0]
    mixer, p = params["blocks"][0]["mixer"], params["blocks"][0]
    w, b = w_vo_affine(mixer["wv"], mixer["wo"], p["norm_in"]["scale"], mixer["bv"])
    h0 = np.asarray(params["embed"], np.float64)[5]
    x0 = h0 / np.sqrt(np.mean(h0 ** 2) + spec.norm_eps)
    np.testing.assert_allclose(x0 @ w + b, out0, rtol=2e-4, atol=1e-6)
    a = trigger_alignment(x0, w, b, x0 @ w + b)
    assert a["abs_cos_with_s_star"] == pytest.approx(1) and a["chance_abs_cos"] == pytest.approx(math.sqrt(2 / (math.pi * 8)))


def test_post_norm_spikes_are_read_before_the_norm():
    """Post-LN bounds |h| after each block by about sqrt(D) x gamma; Gu et al. read h + F(h) before it."""
    spec = ModelSpec(vocab_size=20, n_layers=1, d_model=16, n_heads=2, d_head=8, d_ff=32, max_seq_len=8,
                     norm_placement="post")
    graphdef, params = split(build(spec, 0))
    embed = np.array(params["embed"])
    embed[7, 3] = 300.0
    params["embed"] = jnp.asarray(embed)
    model = LoadedModel(graphdef, params, spec, None, False, "planted post-norm")
    seqs = np.array([[7, 1, 2, 3, 4, 5, 6, 8]] * 2, np.int32)
    p1 = pipeline.block_statistics(model, seqs, pipeline.ProbeOptions(seq_len=8, batch_size=2),
                                   stats.SpikeCriterion.relative())
    assert p1["blocks"][1]["residual"]["top3"][0, 0] > 250                     # after the norm it is <= 4
    _, inter = apply(graphdef, params, jnp.asarray(seqs), ("residual",))
    assert float(jnp.max(jnp.abs(collect(inter, 2)["residual"][1]))) < 5


def test_training_time_statistics_equal_the_probes_on_the_same_tokens():
    """The training step's spike, sink ratio and first-token mass (train/stats.py) are the probe's pass-1
    values on the same tokens when T equals stats.sink_seq_len."""
    from jaxsink.config import load_config
    from jaxsink.train.stats import training_stats
    cfg = load_config("tiny", ["model.d_model=32", "model.d_head=8", "model.d_ff=64", "train.seq_len=16",
                               "stats.sink_seq_len=16"])
    spec = ModelSpec.from_config(cfg.model, 257)
    graphdef, params = split(build(spec, 1))
    tokens = np.asarray(np.random.default_rng(4).integers(0, 256, size=(4, 16)), np.int32)
    names, stats_fn = training_stats(cfg)
    _, inter = apply(graphdef, params, jnp.asarray(tokens), names)
    train = stats_fn(inter)
    model = LoadedModel(graphdef, params, spec, None, True, "same tokens")
    p1 = pipeline.block_statistics(model, tokens, pipeline.ProbeOptions(seq_len=16, batch_size=4),
                                   stats.SpikeCriterion())
    probe_sink = np.mean([h["is_sink"] for h in p1["heads"].values()])
    probe_mass = [h["first_token_mass"].mean() for _, h in sorted(p1["heads"].items())]
    probe_spike = np.mean(np.max([p1["blocks"][i]["residual"]["top3"][:, 0] for i in sorted(p1["blocks"])], 0))
    assert float(train["sink_ratio"]) == pytest.approx(probe_sink, abs=1e-6)
    np.testing.assert_allclose(np.asarray(train["first_token_mass"]), probe_mass, rtol=1e-5)
    assert float(train["spike"]) == pytest.approx(probe_spike, rel=1e-5)


def test_no_sink_statistics_where_uniform_attention_passes_eps():
    from jaxsink.stats.sink_validity import sink_ratio_defined, uniform_alpha0
    assert uniform_alpha0(8) == pytest.approx(sum(1 / i for i in range(1, 9)) / 8) and uniform_alpha0(8) > 0.3
    assert not sink_ratio_defined(9, 0.3) and sink_ratio_defined(10, 0.3) and sink_ratio_defined(64, 0.3)
    A = np.tril(np.ones((8, 8))) / np.arange(1, 9)[:, None]                  # uniform causal attention
    assert A[:, 0].mean() == pytest.approx(uniform_alpha0(8))


def test_evaluation_counts_only_the_loss_range():
    """Table 8 rows are evaluated on the positions they were trained on (review P1.6)."""
    from jaxsink.train.step import make_eval_step, position_weights, token_nll
    spec = ModelSpec(vocab_size=20, n_layers=1, d_model=8, n_heads=2, d_head=4, d_ff=16, max_seq_len=8)
    graphdef, params = split(build(spec, 0))
    rng = np.random.default_rng(5)
    inputs, targets = (jnp.asarray(rng.integers(0, 20, (3, 8)), jnp.int32) for _ in range(2))
    mask = jnp.asarray([1, 1, 0])
    s, n = make_eval_step(graphdef, position_weights(8, 3, 0))(params, inputs, targets, mask)
    logits, _ = apply(graphdef, params, inputs)
    nll = np.asarray(token_nll(logits, targets))
    assert float(n) == 2 * 5 and float(s) == pytest.approx(nll[:2, 3:].sum(), rel=1e-5)
