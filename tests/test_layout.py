"""The stacked parameter layout (`model.scan_layers`): same arrays, same function, same training as per block;
checkpoints resume across layouts and meshes; importers and probes see per-block models."""
import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_train import corpus, losses, tiny  # noqa: F401 -- corpus is a fixture
from variants import spec
from jaxsink.model import apply, build, forward, layout, per_block, split
from jaxsink.train.loop import train
from jaxsink.train.setup import load_trained


@pytest.mark.parametrize("name", ["baseline", "sandwich_qk", "gate_cond_head", "learned_pos"])
def test_stacked_parameters_are_the_per_block_ones_stacked(name):
    """Built with the same seed, the stacked model's `layers.attention` / `layers.ffn` arrays are the
    per-block model's blocks 1, 3, 5 / 2, 4, 6 stacked (checked leaf by leaf in NumPy), with a leading
    `layers` logical axis; the round trip is exact."""
    flat_spec = spec(name, n_layers=3)
    _, blocks = split(build(flat_spec, seed=4))
    stacked_model = build(dataclasses.replace(flat_spec, scan_layers=True), seed=4)
    _, stacked = split(stacked_model)
    assert "blocks" not in stacked and set(stacked["layers"]) == {"attention", "ffn"}
    for kind, first in (("attention", 0), ("ffn", 1)):
        ours = jax.tree_util.tree_flatten_with_path(stacked["layers"][kind])[0]
        assert ours
        for path, value in ours:
            want = np.stack([np.asarray(_at(blocks["blocks"][first + 2 * i], path)) for i in range(3)])
            assert np.array_equal(np.asarray(value), want), (kind, path)
    for k in blocks:
        if k != "blocks":
            assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(blocks[k]), jax.tree.leaves(stacked[k])))
    axes = {v.logical_axes[0] for _, v in _flat_vars(stacked_model, "layers")}
    assert axes == {"layers"}
    back = layout.to_layout(stacked, stacked=False)
    assert jax.tree.structure(back) == jax.tree.structure(blocks)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(blocks)))


def test_stacked_model_computes_the_per_block_function_and_captures_per_block():
    flat_spec = spec("baseline", n_layers=3)
    graphdef, params = split(build(flat_spec, seed=2))
    stacked_graphdef, _ = split(build(dataclasses.replace(flat_spec, scan_layers=True)))
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, flat_spec.vocab_size, (2, 12)))
    stacked_params = layout.to_layout(params, stacked=True)
    a, b = apply(graphdef, params, tokens)[0], apply(stacked_graphdef, stacked_params, tokens)[0]
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    jaxpr = str(jax.make_jaxpr(lambda p: apply(stacked_graphdef, p, tokens)[0])(stacked_params))
    assert "scan[" in jaxpr                      # the plain forward scans the stored stack
    _, ia = apply(graphdef, params, tokens, capture=("residual", "attn_probs"))
    _, ib = apply(stacked_graphdef, stacked_params, tokens, capture=("residual", "attn_probs"))
    assert jax.tree.structure(ia) == jax.tree.structure(ib)     # per-block captures from a stacked model
    for x, y in zip(jax.tree.leaves(ia), jax.tree.leaves(ib)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)
    twin = per_block(build(dataclasses.replace(flat_spec, scan_layers=True), seed=2))
    assert not twin.spec.scan_layers and len(twin.blocks) == 6


def test_hf_import_runs_in_the_stacked_layout(tmp_path):
    """An imported checkpoint (per block, as importers return it) stacked into a scan model: same logits."""
    from test_importers import hf_reference
    from jaxsink.importers import load_hf
    _, folder = hf_reference(tmp_path, "llama")
    loaded = load_hf(folder)
    stacked_graphdef, _ = split(build(dataclasses.replace(loaded.spec, scan_layers=True)))
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 264, (2, 16)), jnp.int32)
    want = forward(jax.tree.map(lambda x: x, _merge(loaded.graphdef, loaded.params)), ids)[0]
    got = apply(stacked_graphdef, layout.to_layout(loaded.params, stacked=True), ids)[0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def _cfg(corpus, *overrides):
    return tiny(corpus, "model.n_layers=3", "train.steps=8", *overrides)


def test_training_in_either_layout_and_resuming_across_layouts_and_meshes(corpus, tmp_path):
    """(a) 8 steps per block on 1 device; (b) the same run stacked on an 8-device FSDP x tensor mesh, its
    step-8 checkpoint removed, resumed per block on 1 device from step 4; (c) stacked throughout. Losses agree step by step, and the
    stacked workdir loads for probing as the per-block model (same logits as run (a)'s)."""
    one = jax.devices()[:1]
    a = train(_cfg(corpus), tmp_path / "a", devices=one, progress=False)
    train(_cfg(corpus, "model.scan_layers=True", "mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2"),
          tmp_path / "b", devices=jax.devices()[:8], progress=False)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "8")
    b = train(_cfg(corpus), tmp_path / "b", devices=one, progress=False)
    assert b["start_step"] == 4
    c = train(_cfg(corpus, "model.scan_layers=True"), tmp_path / "c", devices=one, progress=False)
    la, lb, lc = (losses(tmp_path / w) for w in "abc")
    assert sorted(la) == sorted(lb) == sorted(lc) == list(range(8))
    np.testing.assert_allclose([lb[s] for s in range(8)], [la[s] for s in range(8)], rtol=2e-5)
    np.testing.assert_allclose([lc[s] for s in range(8)], [la[s] for s in range(8)], rtol=2e-5)
    assert abs(a["heldout_loss"] - b["heldout_loss"]) < 1e-4 and abs(a["heldout_loss"] - c["heldout_loss"]) < 1e-4
    probed_a, probed_c = load_trained(tmp_path / "a"), load_trained(tmp_path / "c")
    assert "blocks" in probed_c.params and not probed_c.spec.scan_layers
    ids = jnp.asarray(np.random.default_rng(0).integers(0, probed_a.spec.vocab_size, (2, 16)), jnp.int32)
    np.testing.assert_allclose(np.asarray(apply(probed_c.graphdef, probed_c.params, ids)[0]),
                               np.asarray(apply(probed_a.graphdef, probed_a.params, ids)[0]), rtol=1e-3, atol=1e-4)


def _at(tree, path):
    for key in path:
        tree = tree[key.key if hasattr(key, "key") else key.idx]
    return tree


def _flat_vars(model, prefix):
    from flax import nnx
    return [(p, v) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param)) if p[0] == prefix]


def _merge(graphdef, params):
    from flax import nnx
    return nnx.merge(graphdef, nnx.State(params))
