"""The one jaxsink model: a decoder-only Transformer whose blocks are composed from parts by config.

Layout follows the paper's block indexing (§2.1): `blocks[i]` (0-based) is paper block i+1, an attention
block when i is even and an FFN block when i is odd, each `H_{i+1} = combine(H_i, F_i)` with the norm
placement of the config. Pretrained checkpoints are imported into this same class.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsink.model.attention import Attention
from jaxsink.model import layout
from jaxsink.model.capture import BlockOutput, NormedInput, Residual, capture_types
from jaxsink.model.interventions import NO_INTERVENTIONS, Interventions
from jaxsink.model.layers import GeluMLP, LinearFFN, Norm, ReluMLP, SwiGLU, param
from jaxsink.model.partitioning import BATCH, EMBED, LENGTH, VOCAB, constrain
from jaxsink.model.spec import REMAT_POLICIES, ModelSpec

LAYER_AXIS = "layers"     # logical axis of stacked layer parameters (replicated by default: each chip holds all L)
FFN_MIXERS = {"swiglu": SwiGLU, "gelu": GeluMLP, "linear": LinearFFN, "attention": Attention, "relu": ReluMLP}


class Block(nnx.Module):
    """One residual block. Placements (N = norm, F = attention or FFN):

    pre: H + F(N(H));  post: N(H + F(H));  sandwich: H + N_out(F(N_in(H)));
    sandwich_qk: H + N_out(F(H)) with QK-norm in attention (OLMo-2);  none: H + F(H).
    """

    def __init__(self, spec: ModelSpec, index: int, rngs: nnx.Rngs):
        self.placement, self.index = spec.norm_placement, index   # index: the paper's 1-based block number
        is_attention = index % 2 == 1
        norm = lambda: Norm(spec.norm_type, spec.d_model, spec.norm_eps, spec.dyt_alpha_init)  # noqa: E731
        if self.placement in ("pre", "sandwich"):
            self.norm_in = norm()
        if self.placement in ("post", "sandwich", "sandwich_qk"):
            self.norm_out = norm()
        self.mixer = Attention(spec, rngs) if is_attention else FFN_MIXERS[spec.ffn](spec, rngs)

    def __call__(self, h, ctx):
        ctx = {**ctx, "block": self.index}
        x = self.norm_in(h) if self.placement in ("pre", "sandwich") else h
        self.sow(NormedInput, "normed_input", x)
        f = self.mixer(x, ctx)
        if self.placement == "post":
            self.sow(Residual, "residual_pre_norm", h + f)   # Gu et al.: post-norm spikes live in h + F(h)
            new = self.norm_out(h + f)
        else:
            if self.placement in ("sandwich", "sandwich_qk"):
                f = self.norm_out(f)
            new = h + f
        new = ctx["interventions"].edit_residual(self.index, new)   # probes' residual edits (Sun et al.)
        self.sow(BlockOutput, "block_out", f)
        self.sow(Residual, "residual", new)
        return constrain(new, BATCH, LENGTH, EMBED)      # layer boundary: batch-split (partitioning.py)


class Layer(nnx.Module):
    """Paper blocks 2i+1 (attention) and 2i+2 (FFN). With `scan_layers` the model holds one Layer whose
    parameters are stacked over layers on a leading `layers` axis (`layout.py`)."""

    def __init__(self, spec: ModelSpec, i: int, rngs: nnx.Rngs):
        self.attention = Block(spec, 2 * i + 1, rngs)
        self.ffn = Block(spec, 2 * i + 2, rngs)

    def __call__(self, h, ctx):
        return self.ffn(self.attention(h, ctx), ctx)


def stacked_layer(spec: ModelSpec, rngs: nnx.Rngs) -> Layer:
    """One Layer whose every parameter is the stack of the L layers' (logical axes gain a leading `layers`).

    The layers are created one by one, in the per-block model's order, so the same seed gives the same
    arrays in both layouts (`layout.stack_blocks(per_block) == stacked`)."""
    layers = [Layer(spec, i, rngs) for i in range(spec.n_layers)]
    graphdef = nnx.graphdef(layers[0])
    flats = [nnx.to_flat_state(nnx.state(layer)) for layer in layers]
    stacked = [(path, var.replace(jnp.stack([v[...] for _, v in column]),
                                  logical_axes=(LAYER_AXIS, *var.logical_axes)))
               for column in zip(*flats) for path, var in [column[0]]]
    return nnx.merge(graphdef, nnx.from_flat_state(stacked))


class Transformer(nnx.Module):
    """Embedding (+ learned positions) -> 2L blocks -> final norm -> head (paper Eq. 13-14)."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs):
        self.spec = spec
        d, v = spec.d_model, spec.vocab_size
        e_std = spec.embed_init_std or spec.init_std
        self.embed = param(rngs, (v, d), ("vocab", "embed"), e_std)
        if spec.position == "learned":
            self.pos_embed = param(rngs, (spec.max_seq_len, d), ("position", "embed"), e_std)
        if spec.scan_layers:
            self.layers = stacked_layer(spec, rngs)
        else:
            self.blocks = nnx.List([Block(spec, i + 1, rngs) for i in range(spec.n_blocks)])
        if spec.norm_placement != "none":
            self.final_norm = Norm(spec.norm_type, d, spec.norm_eps, spec.dyt_alpha_init)
        if not spec.tie_embeddings:
            self.head = param(rngs, (d, v), ("embed", "vocab"), spec.init_std)

    def __call__(self, tokens, interventions: Interventions | None = None, fused: bool = False,
                 layer_transforms: bool = False):
        """Logits [B, T, V]. `interventions` (probes only; see `forward`) edit the computation.

        `layer_transforms`: nothing is captured or edited, so `spec.remat` may apply to a per-block model (a
        sow inside `jax.checkpoint` could not leave it). A stacked model (`scan_layers`) always scans;
        `forward` hands captures and edits to its per-block twin.
        """
        h, head = self.hidden(tokens, interventions, fused, layer_transforms)
        return constrain((h @ head.astype(h.dtype)).astype(jnp.float32), BATCH, LENGTH, VOCAB)

    def hidden(self, tokens, interventions=None, fused: bool = False, layer_transforms: bool = False):
        """(final hidden states [B, T, D], head matrix [D, V]): the logits are h @ head; a loss can take
        them in chunks without the whole [B, T, V] (`train/loss.py`)."""
        spec = self.spec
        interventions = interventions or NO_INTERVENTIONS
        t = tokens.shape[1]
        positions = jnp.arange(t)
        tok = jnp.take(self.embed[...], tokens, axis=0)
        h = tok + self.pos_embed[...][:t][None] if spec.position == "learned" else tok
        h = constrain(h.astype(spec.compute_dtype), BATCH, LENGTH, EMBED)
        self.sow(Residual, "embedding", h)
        ctx = {"positions": positions, "token_embedding": tok, "interventions": interventions,
               "fused": fused and spec.fused_attention}
        if spec.scan_layers:
            h = self._scan_layers(h, ctx)
        elif layer_transforms and spec.remat != "none":
            h = self._remat_blocks(h, ctx)
        else:
            for block in self.blocks:
                h = block(h, ctx)
        if spec.norm_placement != "none":
            h = self.final_norm(h)
        return h, (self.embed[...].T if spec.tie_embeddings else self.head[...])

    def _scan_layers(self, h, ctx):
        """`lax.scan` over the stored stacked layer parameters, each layer rematerialised by `spec.remat`
        (MaxText's scan-over-layers). Nothing can be captured or edited here: `forward` runs such a model
        per block (`per_block`) when it must."""
        graphdef, state = nnx.split(self.layers)
        layer = _remat(lambda h, layer_state: (nnx.merge(graphdef, layer_state)(h, ctx), None), self.spec)
        return jax.lax.scan(layer, h, state)[0]

    def _remat_blocks(self, h, ctx):
        """Per-block layout, each layer (attention + FFN block) rematerialised by `spec.remat`."""
        pairs = [(self.blocks[2 * i], self.blocks[2 * i + 1]) for i in range(self.spec.n_layers)]
        graphdef = nnx.graphdef(pairs[0])     # layers differ only in the static block index, unused here

        def layer(h, state):
            attention, ffn = nnx.merge(graphdef, state)
            return ffn(attention(h, ctx), ctx), None
        layer = _remat(layer, self.spec)
        for pair in pairs:
            h, _ = layer(h, nnx.state(pair))
        return h


def _remat(fn, spec: ModelSpec):
    return fn if spec.remat == "none" else jax.checkpoint(fn, policy=REMAT_POLICIES[spec.remat])


def build(spec: ModelSpec, seed: int = 0) -> Transformer:
    return Transformer(spec, nnx.Rngs(params=seed))


def forward(model: Transformer, tokens, capture=(), interventions=None):
    """Logits and the requested intermediates (names from `capture.CAPTURE_TYPES`).

    Always runs under `nnx.capture`, so `sow` never falls back to the deprecated attribute storage.
    `interventions` (for probes): an `Interventions` (residual edits, window attention, hidden sink keys;
    see `interventions.py`). Returns (logits, State | None).
    """
    types = capture_types(capture)
    if model.spec.scan_layers and (types or not (interventions is None or interventions.empty)):
        model = per_block(model)     # captures and edits need the blocks one by one
    fused = "attn_probs" not in capture          # the fused kernel never materialises probabilities
    if not types:
        untouched = interventions is None or interventions.empty
        return nnx.capture(model)(tokens, interventions, fused, untouched), None
    logits, *states = nnx.capture(model, *types)(tokens, interventions, fused)
    return logits, nnx.merge_state(*states) if len(states) > 1 else states[0]


@functools.lru_cache(maxsize=16)
def per_block_graphdef(spec: ModelSpec):
    """The graphdef of `spec`'s model in the per-block layout (`scan_layers` off)."""
    return nnx.graphdef(nnx.eval_shape(lambda: build(dataclasses.replace(spec, scan_layers=False))))


def per_block(model: Transformer) -> Transformer:
    """The same model (same arrays) in the per-block layout."""
    if not model.spec.scan_layers:
        return model
    return nnx.merge(per_block_graphdef(model.spec), nnx.State(layout.unstack_layers(split(model)[1])))


def apply(graphdef, params: dict, tokens, capture=(), interventions=None):
    """Pure functional forward over a nested dict of parameter arrays (what `jax.jit` sees)."""
    return forward(nnx.merge(graphdef, nnx.State(params)), tokens, capture, interventions)


def apply_hidden(graphdef, params: dict, tokens):
    """Plain forward (nothing captured) to (final hidden states, head matrix), for chunked losses."""
    model = nnx.merge(graphdef, nnx.State(params))
    return nnx.capture(model.hidden)(tokens, None, True, True)


def split(model: Transformer):
    """(graphdef, params as a nested dict of arrays) — parameters are the only state of the model."""
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(state)


def abstract_model(spec: ModelSpec):
    """graphdef and the abstract parameter State (Variables of ShapeDtypeStruct, with logical axes)."""
    return nnx.split(nnx.eval_shape(lambda: build(spec)), nnx.Param)


def map_variables(state: nnx.State, fn) -> dict:
    """Nested dict (the `split` layout) of `fn(variable)` for every Variable of `state`."""
    out: dict = {}
    for path, var in nnx.to_flat_state(state):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = fn(var)
    return out


def init_params(spec: ModelSpec, seed: int) -> dict:
    return split(build(spec, seed))[1]


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
