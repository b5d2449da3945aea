"""Every model variant against the independent float64 NumPy reference, plus causality."""
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_numpy as ref
from variants import VARIANTS, flat, spec
from jaxsink.model import apply, build, collect, layout, split
from jaxsink.model.interventions import FirstKeyMask, Interventions, ResidualEdit


def random_params(params: dict, seed: int) -> dict:
    """Replace every parameter by fresh random values (zero-initialised gates/biases would hide bugs)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    rng = np.random.default_rng(seed)
    out = []
    for path, x in leaves:
        name = str(getattr(path[-1], "key", path[-1]))
        noise = rng.normal(size=x.shape).astype(np.float32)
        if name == "scale":
            value = 1.0 + 0.2 * noise
        elif name == "alpha":
            value = 0.5 + 0.1 * noise
        else:
            value = 0.4 * noise
        out.append(jnp.asarray(value, jnp.float32))
    return jax.tree_util.tree_unflatten(treedef, out)


def to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_matches_numpy_reference(name):
    s = spec(name)
    graphdef, params = split(build(s, seed=1))
    params = random_params(params, seed=zlib.crc32(name.encode()))
    tokens = np.random.default_rng(7).integers(0, s.vocab_size, size=(2, 11))
    logits, inter = apply(graphdef, params, jnp.asarray(tokens), capture=("residual", "block_out", "attn_probs"))
    got = collect(inter, s.n_blocks)
    want_logits, want = ref.forward(to_numpy(params), tokens, flat(s), return_all=True)
    np.testing.assert_allclose(np.asarray(logits), want_logits, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(got["embedding"]), want["residual"][0], rtol=1e-5, atol=1e-5)
    for block in range(1, s.n_blocks + 1):
        np.testing.assert_allclose(np.asarray(got["residual"][block]), want["residual"][block],
                                   rtol=2e-4, atol=2e-4, err_msg=f"residual after block {block}")
        np.testing.assert_allclose(np.asarray(got["block_out"][block]), want["block_out"][block - 1],
                                   rtol=2e-4, atol=2e-4, err_msg=f"output of block {block}")
    assert sorted(got["attn_probs"]) == sorted(i + 1 for i in want["attn_probs"])
    for i, probs in want["attn_probs"].items():
        np.testing.assert_allclose(np.asarray(got["attn_probs"][i + 1]), probs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_causal(name):
    """Changing a later token never changes the logits at earlier positions."""
    s = spec(name)
    graphdef, params = split(build(s, seed=2))
    params = random_params(params, seed=3)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, s.vocab_size, size=(1, 12))
    changed = tokens.copy()
    changed[0, 8:] = (changed[0, 8:] + 1 + rng.integers(0, s.vocab_size - 1, size=4)) % s.vocab_size
    a = np.asarray(apply(graphdef, params, jnp.asarray(tokens))[0])
    b = np.asarray(apply(graphdef, params, jnp.asarray(changed))[0])
    np.testing.assert_array_equal(a[:, :8], b[:, :8])
    assert not np.allclose(a[:, 8:], b[:, 8:])


def test_capture_nothing_stores_nothing():
    s = spec("baseline")
    model = build(s)
    graphdef, params = split(model)
    logits, inter = apply(graphdef, params, jnp.zeros((1, 4), jnp.int32))
    assert inter is None and logits.shape == (1, 4, s.vocab_size)


def test_unknown_capture_name():
    graphdef, params = split(build(spec("baseline")))
    with pytest.raises(ValueError, match="unknown capture"):
        apply(graphdef, params, jnp.zeros((1, 4), jnp.int32), capture=("residuals",))


def _model(name="baseline", **extra):
    s = spec(name, **extra)
    graphdef, params = split(build(s, seed=4))
    return s, graphdef, random_params(params, seed=5)


def test_residual_edit_sets_values_and_empty_edit_changes_nothing():
    s, graphdef, params = _model()
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, s.vocab_size, size=(2, 9)))
    base, inter = apply(graphdef, params, tokens, capture=("residual",))
    mask = np.zeros((1, 9, s.d_model), bool)
    same, _ = apply(graphdef, params, tokens, interventions=Interventions(residual_edits=(ResidualEdit(2, mask, 0.0),)))
    np.testing.assert_array_equal(np.asarray(base), np.asarray(same))
    mask[0, 0, [3, 5]] = True
    edited, inter2 = apply(graphdef, params, tokens, capture=("residual",),
                           interventions=Interventions(residual_edits=(ResidualEdit(2, mask, 7.5),)))
    r1, r2 = collect(inter, s.n_blocks)["residual"], collect(inter2, s.n_blocks)["residual"]
    np.testing.assert_array_equal(np.asarray(r2[2])[:, 0, [3, 5]], 7.5)
    np.testing.assert_array_equal(np.asarray(r2[2])[:, 1:], np.asarray(r1[2])[:, 1:])
    np.testing.assert_array_equal(np.asarray(r2[1]), np.asarray(r1[1]))
    assert not np.allclose(np.asarray(edited), np.asarray(base))


def test_streaming_window_equals_sliding_window_config():
    s, graphdef, params = _model()
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, s.vocab_size, size=(1, 12)))
    windowed, _ = apply(graphdef, params, tokens, interventions=Interventions(window=3))
    s3 = spec("baseline", sliding_window=3)
    graphdef3, _ = split(build(s3))
    np.testing.assert_allclose(np.asarray(windowed), np.asarray(apply(graphdef3, params, tokens)[0]), rtol=1e-5, atol=1e-5)
    full, _ = apply(graphdef, params, tokens)
    wide, _ = apply(graphdef, params, tokens, interventions=Interventions(window=12))
    np.testing.assert_allclose(np.asarray(full), np.asarray(wide), rtol=1e-5, atol=1e-5)
    _, inter = apply(graphdef, params, tokens, capture=("attn_probs",),
                     interventions=Interventions(window=3, keep_first=2))
    probs = np.asarray(collect(inter, s.n_blocks)["attn_probs"][1])[0, 0]
    visible = probs > 0
    assert visible[11, 0] and visible[11, 1] and visible[11, 10] and not visible[11, 5]


def test_drop_first_key_hides_the_sink_from_chosen_heads():
    s, graphdef, params = _model()
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, s.vocab_size, size=(1, 8)))
    heads = np.array([True, False, True, False])
    _, inter = apply(graphdef, params, tokens, capture=("attn_probs",),
                     interventions=Interventions(drop_first_key=(FirstKeyMask(3, heads),)))
    probs = collect(inter, s.n_blocks)["attn_probs"]
    p3 = np.asarray(probs[3])[0]
    assert np.all(p3[heads][:, 1:, 0] == 0) and np.all(p3[~heads][:, 1:, 0] > 0)
    np.testing.assert_allclose(p3.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(probs[1])[0][:, 1:, 0] > 0)


@pytest.mark.parametrize("name", ["baseline", "gqa", "sliding_window", "qk_norm", "gate_cond_head"])
def test_fused_attention_equals_explicit(name):
    """The fused kernel (used when probabilities are not captured) computes the same function."""
    s, graphdef, params = _model(name)
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, s.vocab_size, size=(2, 10)))
    fused, _ = apply(graphdef, params, tokens)
    explicit, _ = apply(graphdef, params, tokens, capture=("attn_probs",))
    np.testing.assert_allclose(np.asarray(fused), np.asarray(explicit), rtol=1e-5, atol=1e-5)
    graphdef_off, _ = split(build(spec(name, fused_attention=False)))
    np.testing.assert_allclose(np.asarray(apply(graphdef_off, params, tokens)[0]), np.asarray(explicit),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("remat,scan", [("none", True), ("full", False), ("dots", True), ("dots_no_batch", True)])
@pytest.mark.parametrize("name", ["baseline", "sandwich_qk", "gate_static_token", "learned_pos"])
def test_remat_and_scan_layers_compute_the_same_loss_and_gradients(name, remat, scan):
    """`model.remat` / `model.scan_layers` change how the layers run, never what they compute."""
    tokens = jnp.asarray(np.random.default_rng(8).integers(0, spec(name).vocab_size, size=(2, 10)))
    graphdef_fast, _ = split(build(spec(name, n_layers=3, remat=remat, scan_layers=scan)))
    graphdef_plain, params3 = split(build(spec(name, n_layers=3)))
    params3 = random_params(params3, 9)
    fast_params = layout.to_layout(params3, stacked=scan)    # scan_layers stores the layers stacked

    def value_and_grad(g, p):
        return jax.jit(jax.value_and_grad(lambda p: jnp.mean(apply(g, p, tokens)[0] ** 2)))(p)

    (l0, g0), (l1, g1) = value_and_grad(graphdef_plain, params3), value_and_grad(graphdef_fast, fast_params)
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    g1 = layout.to_layout(g1, stacked=False)
    assert jax.tree.structure(g1) == jax.tree.structure(g0)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    jaxpr = str(jax.make_jaxpr(lambda p: apply(graphdef_fast, p, tokens)[0])(fast_params))
    assert ("scan[" in jaxpr) == scan and ("checkpoint" in jaxpr or "remat" in jaxpr) == (remat != "none")
    # capturing runs the blocks one by one (a sow cannot leave a scan), with the same logits
    captured, inter = apply(graphdef_fast, fast_params, tokens, capture=("residual",))
    np.testing.assert_allclose(np.asarray(captured), np.asarray(apply(graphdef_plain, params3, tokens)[0]),
                               rtol=1e-5, atol=1e-5)
    assert inter is not None
