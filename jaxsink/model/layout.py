"""The two parameter layouts of the one Transformer, and the exact conversion between them.

- **per block** (`model.scan_layers=False`, and always what probes, importers and `LoadedModel` see):
  `params["blocks"][i]` is paper block i+1 (§2.1), attention when i is even, FFN when i is odd.
- **stacked** (`model.scan_layers=True`, training at depth): `params["layers"]["attention"]` and
  `params["layers"]["ffn"]` hold every layer's attention block and FFN block with a leading `layers` axis of
  size L, so `lax.scan` runs over the stored arrays (MaxText's scan-over-layers): compile time and memory stay
  flat in depth and nothing is re-stacked in a step.

The conversion is pure reshuffling (no arithmetic), so a stacked model computes bit for bit what the per-block
model with the same arrays computes. `convert_tree` applies it to any pytree holding parameter-shaped dicts
(Adam's moments), so a checkpoint saved in one layout resumes a run in the other.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

BLOCKS, LAYERS = "blocks", "layers"


def is_stacked(params) -> bool:
    return isinstance(params, dict) and LAYERS in params


def _stack(*xs):
    return np.stack(xs) if all(isinstance(x, np.ndarray) for x in xs) else jnp.stack(xs)


def stack_blocks(params: dict) -> dict:
    """Per-block dict -> stacked dict (blocks 1, 3, 5.. -> `layers.attention`; 2, 4, 6.. -> `layers.ffn`)."""
    blocks = params[BLOCKS]
    n = len(blocks)
    if n % 2:
        raise ValueError(f"stack_blocks: {n} blocks; a layer is an attention block and an FFN block")
    order = sorted(blocks)
    attention = [blocks[k] for k in order[0::2]]
    ffn = [blocks[k] for k in order[1::2]]
    rest = {k: v for k, v in params.items() if k != BLOCKS}
    return {**rest, LAYERS: {"attention": jax.tree.map(_stack, *attention), "ffn": jax.tree.map(_stack, *ffn)}}


def unstack_layers(params: dict) -> dict:
    """Stacked dict -> per-block dict (the inverse of `stack_blocks`)."""
    layers = params[LAYERS]
    n_layers = jax.tree.leaves(layers["attention"])[0].shape[0]
    blocks = {}
    for i in range(n_layers):
        blocks[2 * i] = jax.tree.map(lambda x: x[i], layers["attention"])   # noqa: B023 -- used at once
        blocks[2 * i + 1] = jax.tree.map(lambda x: x[i], layers["ffn"])      # noqa: B023
    rest = {k: v for k, v in params.items() if k != LAYERS}
    return {**rest, BLOCKS: blocks}


def to_layout(params: dict, stacked: bool) -> dict:
    """`params` in the requested layout (unchanged when already in it)."""
    if stacked == is_stacked(params):
        return params
    return stack_blocks(params) if stacked else unstack_layers(params)


def convert_tree(tree, stacked: bool):
    """Every parameter-shaped dict inside `tree` (params, optimizer moments) converted to the layout."""
    def is_params(x):
        return isinstance(x, dict) and (BLOCKS in x or LAYERS in x)
    return jax.tree.map(lambda x: to_layout(x, stacked) if is_params(x) else x, tree, is_leaf=is_params)
