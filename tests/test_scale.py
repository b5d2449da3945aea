"""What makes the training step fit at scale: the chunked cross-entropy, the splash kernel (Pallas interpret
mode on CPU), activation shardings under the partitioning context, and statistics as a separate pass."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsink.model import partitioning as part
from jaxsink.model.flash import fused_attention, splash_attention
from jaxsink.train.loss import chunk_size, chunked_nll


def _nll64(h, head, targets):
    z = np.asarray(h, np.float64) @ np.asarray(head, np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]


@pytest.mark.parametrize("t,max_chunk", [(12, 4), (12, 5), (7, 1024)])
def test_chunked_nll_matches_float64_reference_and_its_gradient(t, max_chunk):
    rng = np.random.default_rng(t + max_chunk)
    h = jnp.asarray(rng.standard_normal((3, t, 8)), jnp.float32)
    head = jnp.asarray(rng.standard_normal((8, 50)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 50, (3, t)))
    got = chunked_nll(h, head, y, max_chunk)
    np.testing.assert_allclose(np.asarray(got), _nll64(h, head, y), rtol=1e-5, atol=1e-5)
    # gradient w.r.t. h and head: finite differences of the float64 reference along a random direction
    dh, dw = rng.standard_normal(h.shape), rng.standard_normal(head.shape)
    gh, gw = jax.grad(lambda a, b: jnp.sum(chunked_nll(a, b, y, max_chunk)), (0, 1))(h, head)
    eps = 1e-5
    h64, w64 = np.asarray(h, np.float64), np.asarray(head, np.float64)
    fd = (_nll64(h64 + eps * dh, w64 + eps * dw, y).sum() - _nll64(h64 - eps * dh, w64 - eps * dw, y).sum()) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(gh, dh) + jnp.vdot(gw, dw)), fd, rtol=1e-4)


def test_chunk_size_divides():
    assert chunk_size(4096) == 1024 and chunk_size(12, 5) == 4 and chunk_size(7) == 7 and chunk_size(13, 4) == 1


def _attention64(q, k, v, window=0):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, t, h, d = q.shape
    k = np.repeat(k, h // k.shape[2], axis=2)
    v = np.repeat(v, h // v.shape[2], axis=2)
    s = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
    i, j = np.arange(t)[:, None], np.arange(t)[None]
    vis = (j <= i) & ((j > i - window) if window else True)
    s = np.where(vis, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", p, v)


@pytest.mark.parametrize("window,grad", [(0, True), (40, False)])
def test_splash_kernel_matches_float64_attention(window, grad):
    """The TPU kernel's own code, run by the Pallas interpreter on CPU, against causal softmax attention
    (grouped-query: 4 query heads read 2 kv heads); its gradient against XLA's attention."""
    rng = np.random.default_rng(window)
    q = jnp.asarray(rng.standard_normal((1, 128, 4, 16)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((1, 128, 2, 16)), jnp.float32) for _ in range(2))
    got = splash_attention(q, k, v, window, interpret=True)
    np.testing.assert_allclose(np.asarray(got), _attention64(q, k, v, window), atol=2e-3)
    if grad:
        g = jax.grad(lambda q: jnp.sum(splash_attention(q, k, v, window, interpret=True) ** 2))(q)
        g_ref = jax.grad(lambda q: jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=True) ** 2))(q)
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=5e-3)


def test_fused_attention_is_xla_off_tpu_and_constrain_is_identity_outside_the_context():
    x = jnp.ones((2, 128, 4, 8))
    assert part.constrain(x, part.BATCH, None, None, None) is x
    with part.partitioning({"activation_batch": ("data",)}, "cpu"):
        assert part.constrain(x, part.BATCH) is x                     # no mesh: nothing to pin
        np.testing.assert_allclose(np.asarray(fused_attention(x, x, x)),
                                   np.asarray(jax.nn.dot_product_attention(x, x, x, is_causal=True)))


def test_activations_are_split_by_batch_under_the_mesh():
    from jaxsink.sharding import make_mesh
    from jaxsink.config import base_config
    cfg = base_config()
    mesh = make_mesh(cfg.mesh, jax.devices()[:4])
    rules = {"activation_batch": ("data", "fsdp"), "activation_embed": ("tensor",)}
    f = part.partitioned(lambda x: part.constrain(x * 2, part.BATCH, part.LENGTH, part.EMBED), rules, "cpu")
    with jax.set_mesh(mesh):
        y = jax.jit(f)(jnp.ones((8, 3, 5)))
    assert y.sharding.spec[0] in ("data", ("data", "fsdp"), ("data",))


def _tiny_step_setup(extra=()):
    from jaxsink.config import load_config
    from jaxsink.model import ModelSpec, build, split
    from jaxsink.train.optim import make_optimizer
    cfg = load_config("tiny", ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_head=16",
                               "model.d_ff=64", "train.batch_size=4", "train.seq_len=32", "stats.sink_seq_len=16",
                               "stats.sequences=3", *extra])
    spec = ModelSpec.from_config(cfg.model, 257)
    graphdef, params = split(build(spec, seed=3))
    opt = make_optimizer(cfg.train, params)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.integers(0, 257, (1, 4, 32)), jnp.int32)
    batch = {"inputs": x, "targets": jnp.roll(x, -1, axis=-1)}
    return cfg, spec, graphdef, params, opt, batch


@pytest.mark.parametrize("extra", [(), ("model.scan_layers=True", "model.remat=full")])
def test_statistics_step_update_is_bit_for_bit_the_plain_step(extra):
    from jaxsink.train.stats import training_stats
    from jaxsink.train.step import make_train_step
    cfg, spec, graphdef, params, opt, batch = _tiny_step_setup(extra)
    state = {"params": params, "opt_state": opt.init(params), "step": jnp.int32(0)}
    capture, fn = training_stats(cfg)
    plain = jax.jit(make_train_step(graphdef, opt, cfg.train))
    stats = jax.jit(make_train_step(graphdef, opt, cfg.train, capture=capture, stats_fn=fn,
                                    stats_rows=cfg.stats.sequences, stats_positions=cfg.stats.sink_seq_len))
    (s1, m1), (s2, m2) = plain(state, batch), stats(state, batch)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert float(m1["loss"]) == float(m2["loss"]) and "sink_ratio" in m2 and "spike" not in m1


def test_training_statistics_equal_the_probes_on_the_same_tokens():
    """The statistics pass on the first 3 sequences x 16 positions = the probe's capturing forward on exactly
    those tokens (per-block top-1 |h|, median, first-token mass and sink flags of every head)."""
    from jaxsink.model.loaded import LoadedModel
    from jaxsink.probe import passes
    from jaxsink.stats import SpikeCriterion
    from jaxsink.train.stats import training_stats
    from jaxsink.train.step import make_train_step
    cfg, spec, graphdef, params, opt, batch = _tiny_step_setup()
    model, tokens = LoadedModel(graphdef, params, spec, None, True, "test"), batch["inputs"][0, :3, :16]
    p1 = passes.block_pass(model, 16, 0.3, SpikeCriterion())(params, tokens)
    heads = [p1["heads"][i] for i in (1, 3)]
    peaks = np.concatenate([np.asarray(h["max_alpha_first_half"]).reshape(-1) for h in heads])
    cfg.stats.sink_eps = float(np.median(peaks))         # about half the heads flagged: the flags are tested
    capture, fn = training_stats(cfg)
    step = make_train_step(graphdef, opt, cfg.train, capture=capture, stats_fn=fn, stats_rows=3, stats_positions=16)
    _, m = jax.jit(step)({"params": params, "opt_state": opt.init(params), "step": jnp.int32(0)}, batch)
    top1 = [np.asarray(p1["blocks"][i]["residual"]["top3"])[:, 0].mean() for i in range(1, 5)]
    median = [np.asarray(p1["blocks"][i]["residual"]["median"]).mean() for i in range(1, 5)]
    np.testing.assert_allclose(np.asarray(m["spike/top1"]), top1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["spike/median"]), median, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["first_token_mass"]),
                               [np.asarray(h["first_token_mass"]).mean() for h in heads], rtol=1e-6)
    flags = peaks > cfg.stats.sink_eps
    assert 0 < flags.mean() < 1
    np.testing.assert_allclose(float(m["sink_ratio"]), flags.mean(), rtol=1e-6)


def test_first_positions_of_a_causal_model_do_not_depend_on_later_tokens():
    """Why the statistics pass may cut sequences to stats.sink_seq_len: residuals and attention of positions
    < 16 are those of the whole 32-token sequence."""
    from jaxsink.model import apply, collect
    cfg, spec, graphdef, params, opt, batch = _tiny_step_setup()
    x = batch["inputs"][0]
    full = collect(apply(graphdef, params, x, ("residual", "attn_probs"))[1], 4)
    cut = collect(apply(graphdef, params, x[:, :16], ("residual", "attn_probs"))[1], 4)
    for i in range(1, 5):
        np.testing.assert_allclose(np.asarray(cut["residual"][i]), np.asarray(full["residual"][i])[:, :16],
                                   rtol=1e-5, atol=1e-6)
    for i in (1, 3):
        np.testing.assert_allclose(np.asarray(cut["attn_probs"][i]),
                                   np.asarray(full["attn_probs"][i])[:, :, :16, :16], rtol=1e-5, atol=1e-7)
