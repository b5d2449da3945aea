"""Magnitude / Wanda pruning and the super-weight finder against NumPy and planted weights."""
import jax.numpy as jnp
import numpy as np
import pytest

from test_model import random_params
from variants import spec
from jaxsink.impact import prune
from jaxsink.impact.prune import PruneError
from jaxsink.model import apply, build, collect, split


def np_keep_per_output(scores, sparsity):
    keep = np.ones_like(scores, bool)
    k = int(round(sparsity * scores.shape[0]))
    for j in range(scores.shape[1]):
        keep[np.argsort(scores[:, j])[:k], j] = False
    return keep


def np_keep_nm(scores, n, m):
    keep = np.ones_like(scores, bool)
    for g in range(0, scores.shape[0], m):
        for j in range(scores.shape[1]):
            keep[g + np.argsort(scores[g:g + m, j])[:n], j] = False
    return keep


def test_masks_match_numpy():
    s = np.random.default_rng(0).random((16, 6))
    np.testing.assert_array_equal(np.asarray(prune.prune_mask(jnp.asarray(s), 0.5)), np_keep_per_output(s, 0.5))
    np.testing.assert_array_equal(np.asarray(prune.prune_mask(jnp.asarray(s), pattern="2:4")), np_keep_nm(s, 2, 4))
    glob = np.asarray(prune.prune_mask(jnp.asarray(s), 0.5, per_output=False))
    np.testing.assert_array_equal(glob, s >= np.sort(s.ravel())[48])
    with pytest.raises(PruneError, match="unknown sparsity pattern"):
        prune.prune_mask(jnp.asarray(s), pattern="3:5")
    with pytest.raises(PruneError, match="multiple of 8"):
        prune.prune_mask(jnp.asarray(s[:12]), pattern="4:8")


def _model():
    s = spec("baseline")
    graphdef, params = split(build(s, seed=1))
    return s, graphdef, random_params(params, seed=11)


def test_wanda_matches_numpy_on_the_model():
    s, graphdef, params = _model()
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, s.vocab_size, (2, 9)))
    pruned = prune.prune(graphdef, params, [tokens], "wanda", pattern="2:4")
    _, inter = apply(graphdef, params, tokens, capture=("normed_input",))
    x = np.asarray(collect(inter, s.n_blocks)["normed_input"][2], np.float64)      # FFN block 2's input
    norm = np.sqrt((x ** 2).sum(axis=(0, 1)))
    w = np.asarray(params["blocks"][1]["mixer"]["w_gate"], np.float64)
    keep = np_keep_nm(np.abs(w) * norm[:, None], 2, 4)
    np.testing.assert_array_equal(np.asarray(pruned["blocks"][1]["mixer"]["w_gate"]), np.where(keep, w, 0).astype(np.float32))
    wo = np.asarray(pruned["blocks"][0]["mixer"]["wo"])
    assert np.mean(wo == 0) == 0.5 and np.asarray(pruned["head"]).all()            # the head is not pruned
    mag = prune.prune(graphdef, params, [tokens], "magnitude")
    w_down = np.asarray(params["blocks"][3]["mixer"]["w_down"])
    np.testing.assert_array_equal(np.asarray(mag["blocks"][3]["mixer"]["w_down"]) != 0,
                                  np.abs(w_down) >= np.median(np.abs(w_down)))


def test_super_weight_planted():
    s, graphdef, params = _model()
    mixer = params["blocks"][3]["mixer"]                                            # paper block 4 (FFN)
    mixer["w_gate"] = mixer["w_gate"].at[:, 7].set(3.0)
    mixer["w_up"] = mixer["w_up"].at[:, 7].set(3.0)
    mixer["w_down"] = mixer["w_down"].at[7, 5].set(40.0)
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, s.vocab_size, (2, 9)))
    sw = prune.find_super_weight(graphdef, params, tokens)
    assert (sw.block, sw.in_channel, sw.out_channel, sw.abs_rank) == (4, 7, 5, 0) and sw.value == 40.0
    ablated = prune.set_weight(params, sw.path, (sw.in_channel, sw.out_channel), 0.0)
    assert float(ablated["blocks"][3]["mixer"]["w_down"][7, 5]) == 0.0 and float(mixer["w_down"][7, 5]) == 40.0
