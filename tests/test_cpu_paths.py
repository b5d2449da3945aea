"""The per-backend compute paths (`jaxsink/model/cpu_paths.py`) against the float64 NumPy reference.

Each path table (the CPU one: flattened dots, fused q/k/v and gate/up matmuls, explicit [B, H, T, d]
attention; the accelerator one: `jax.nn.dot_product_attention` and einsum-shaped dots) is forced in turn on
this CPU, and each must give the reference's logits and loss gradients (directional derivatives by central
differences of the float64 loss), and both must agree with each other: the same numbers on every path.
"""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_numpy as ref
from test_model import random_params, to_numpy
from variants import flat, spec
from jaxsink.model import apply, build, cpu_paths, split
from jaxsink.train.step import token_nll

TABLES = {"cpu": cpu_paths.BACKEND_PATHS["cpu"], "accelerator": cpu_paths.BACKEND_PATHS["tpu"]}


@contextlib.contextmanager
def forced(table: dict):
    """Trace with `table` as this CPU's paths (`paths()` is read at trace time, so jit afresh inside)."""
    saved = cpu_paths.BACKEND_PATHS["cpu"]
    cpu_paths.BACKEND_PATHS["cpu"] = table
    try:
        yield
    finally:
        cpu_paths.BACKEND_PATHS["cpu"] = saved


def test_cpu_table_is_the_measured_choice():
    assert cpu_paths.paths("cpu") == {"flat_dots": True, "attention": "explicit", "fuse_projections": True,
                                      "materialize_tables": True, "attention_blocks": 4}
    assert cpu_paths.paths("tpu")["attention"] == cpu_paths.paths("gpu")["attention"] == "fused"
    assert cpu_paths.paths("unknown") == cpu_paths.DEFAULT_PATHS


def numpy_attention(q, k, v, window):
    """float64 causal softmax attention, one (batch, head) at a time; GQA by h // (H / Hkv)."""
    b, t, h, d = q.shape
    g = h // k.shape[2]
    out = np.zeros(q.shape)
    for bi in range(b):
        for hi in range(h):
            logits = q[bi, :, hi] @ k[bi, :, hi // g].T / np.sqrt(d)
            for ti in range(t):
                keys = [s for s in range(t) if s <= ti and (not window or s > ti - window)]
                p = np.exp(logits[ti, keys] - logits[ti, keys].max())
                out[bi, ti, hi] = (p / p.sum()) @ v[bi, keys, hi // g]
    return out


@pytest.mark.parametrize("hkv,window", [(4, 0), (2, 0), (1, 3), (4, 1)])
def test_causal_attention_matches_numpy(hkv, window):
    rng = np.random.default_rng(hkv * 10 + window)
    q = rng.normal(size=(2, 7, 4, 6))
    k, v = rng.normal(size=(2, 2, 7, hkv, 6))
    got = cpu_paths.causal_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), window)
    np.testing.assert_allclose(np.asarray(got), numpy_attention(q, k, v, window), rtol=1e-5, atol=1e-5)
    if window == 1:      # planted: each query sees only itself
        np.testing.assert_allclose(np.asarray(got), v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("blocks,hkv,window", [(2, 4, 0), (4, 2, 0), (4, 1, 3), (4, 4, 1), (8, 2, 5), (3, 2, 0)])
def test_blocked_causal_attention_matches_numpy_values_and_gradients(blocks, hkv, window):
    """Query blocks that read only their visible keys (`attention_blocks`; T = 8, so 3 blocks fall back to
    one): the float64 loop's values, and its directional derivatives of sum(y * w) in q, k and v."""
    rng = np.random.default_rng(blocks * 100 + hkv * 10 + window)
    q = rng.normal(size=(2, 8, 4, 6))
    k, v = rng.normal(size=(2, 2, 8, hkv, 6))
    w = rng.normal(size=q.shape)
    f32 = [jnp.asarray(a, jnp.float32) for a in (q, k, v)]
    got = cpu_paths.causal_attention(*f32, window, blocks=blocks)
    np.testing.assert_allclose(np.asarray(got), numpy_attention(q, k, v, window), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda *a: jnp.sum(cpu_paths.causal_attention(*a, window, blocks=blocks) * w),
                     argnums=(0, 1, 2))(*f32)
    dirs = [rng.normal(size=a.shape) for a in (q, k, v)]
    eps = 1e-6
    plus = [a + eps * u for a, u in zip((q, k, v), dirs)]
    minus = [a - eps * u for a, u in zip((q, k, v), dirs)]
    want = (np.sum(numpy_attention(*plus, window) * w) - np.sum(numpy_attention(*minus, window) * w)) / (2 * eps)
    got_dir = sum(float(np.sum(np.asarray(g, np.float64) * u)) for g, u in zip(grads, dirs))
    np.testing.assert_allclose(got_dir, want, rtol=1e-4)


def test_causal_attention_zero_queries_average_the_prefix():
    """q = 0: uniform weights over the visible keys, so the output is the running mean of v."""
    v = np.random.default_rng(0).normal(size=(1, 5, 2, 3))
    zeros = jnp.zeros((1, 5, 2, 3))
    got = cpu_paths.causal_attention(zeros, zeros, jnp.asarray(v, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), np.cumsum(v, 1) / np.arange(1, 6)[None, :, None, None], rtol=1e-6)


def loss_and_grad(name, table, params, inputs, targets):
    graphdef, _ = split(build(spec(name), seed=1))

    def loss(p):
        logits = apply(graphdef, p, inputs)[0]
        return jnp.mean(token_nll(logits, targets)), logits

    with forced(table):
        (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return np.asarray(logits), float(value), grads


@pytest.mark.parametrize("name", ["baseline", "gqa", "sliding_window", "gelu", "tied", "mqa_kv_bias_gate"])
def test_every_path_matches_the_float64_reference_values_and_gradients(name):
    s = spec(name)
    params = random_params(split(build(s, seed=1))[1], seed=5)
    rng = np.random.default_rng(11)
    tokens = rng.integers(0, s.vocab_size, size=(2, 9))
    targets = rng.integers(0, s.vocab_size, size=(2, 9))
    p64 = to_numpy(params)
    want_logits = ref.forward(p64, tokens, flat(s))
    directions = [jax.tree.map(lambda x: rng.normal(size=x.shape), p64) for _ in range(2)]
    eps = 1e-5
    want_dirs = [(ref.loss(jax.tree.map(lambda p, d: p + eps * d, p64, u), tokens, targets, flat(s))
                  - ref.loss(jax.tree.map(lambda p, d: p - eps * d, p64, u), tokens, targets, flat(s))) / (2 * eps)
                 for u in directions]
    results = {}
    for label, table in TABLES.items():
        logits, value, grads = results[label] = loss_and_grad(name, table, params, jnp.asarray(tokens),
                                                              jnp.asarray(targets))
        np.testing.assert_allclose(logits, want_logits, rtol=2e-4, atol=2e-4, err_msg=label)
        np.testing.assert_allclose(value, ref.loss(p64, tokens, targets, flat(s)), rtol=1e-5, err_msg=label)
        got_dirs = [sum(float(np.vdot(np.asarray(g, np.float64), d)) for g, d in
                        zip(jax.tree.leaves(grads), jax.tree.leaves(u))) for u in directions]
        np.testing.assert_allclose(got_dirs, want_dirs, rtol=2e-3, atol=1e-5, err_msg=label)
    (l_cpu, v_cpu, g_cpu), (l_acc, v_acc, g_acc) = results["cpu"], results["accelerator"]
    np.testing.assert_allclose(l_cpu, l_acc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_cpu, v_acc, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_cpu), jax.tree.leaves(g_acc)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
