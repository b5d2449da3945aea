"""The probe's forward passes over a `LoadedModel`, each jitted once and run batch by batch; results come
back to the host as NumPy trees concatenated over the batch axis.

- `block_pass`: per-block magnitudes, massive-activation masks, per-head sink statistics, position-0 vectors
  (dense [B, H, T, T] probabilities up to `DENSE_LIMIT` tokens, query blocks of `QUERY_BLOCK` beyond);
- `spike_channel_pass`: signed spike-channel values per block, SiLU near identity, keys at position 0;
- `residual_channels`: one block's residual at chosen channels (Sun et al.'s ablation);
- `spiky_at`: whether any block's residual is massive at one position (the vocabulary probe);
- `losses`: per-sequence NLL under an `Interventions`;
- `capture_one`: one intermediate of one batch, for plots.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsink import stats
from jaxsink.model import apply, collect
from jaxsink.model.interventions import Interventions
from jaxsink.model.loaded import LoadedModel
from jaxsink.train.step import token_nll

DENSE_LIMIT = 1024        # longer sequences get their attention statistics in query blocks
QUERY_BLOCK = 256


def next_token_nll(logits, tokens):
    """Next-token NLL per sequence over positions 0..T-2 (targets are the chunk's own next tokens)."""
    return jnp.mean(token_nll(logits[:, :-1], tokens[:, 1:]), axis=-1)


def batches(seqs, size):
    for s in range(0, len(seqs), size):
        yield seqs[s:s + size]


def run_batched(fn, params, seqs, batch_size: int, *args):
    """fn(params, batch, *args) over the batches of `seqs`, concatenated on the host along the batch axis."""
    results = [jax.device_get(fn(params, jnp.asarray(b), *args)) for b in batches(seqs, batch_size)]
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=0), *results)


def block_pass(model: LoadedModel, seq_len: int, sink_eps: float, criterion: stats.SpikeCriterion):
    """jitted (params, tokens) -> {"nll" [B], "blocks": {i: ...}, "heads": {i: head_stats}}."""
    spec = model.spec
    dense = seq_len <= DENSE_LIMIT
    capture = ("residual", "block_out", "normed_input", "attn_probs" if dense else "qkv")

    @jax.jit
    def run(params, tokens):
        logits, inter = apply(model.graphdef, params, tokens, capture)
        captured = collect(inter, spec.n_blocks)
        out = {"nll": next_token_nll(logits, tokens), "blocks": {}, "heads": {}}
        for i in range(1, spec.n_blocks + 1):
            out["blocks"][i] = _block_entry(captured, i, criterion)
        for i in model.attention_blocks():
            if dense:
                out["heads"][i] = stats.head_stats(stats.sink_view(captured["attn_probs"][i], spec.attention),
                                                   sink_eps)
            else:
                out["heads"][i] = _blockwise_heads(model.attention_module(i, params), captured, i, seq_len, sink_eps)
        return out
    return run


def _block_entry(captured, i: int, criterion) -> dict:
    """One block's statistics. Post-norm blocks are read before their norm, in h + F(h), where Gu et al. find
    the massive activations (after the post-LN |h| is bounded by construction; review P2.10)."""
    residual = captured.get("residual_pre_norm", {}).get(i, captured["residual"][i])
    mask = stats.massive_mask(residual, criterion)
    return {"residual": stats.magnitude_stats(residual), "output": stats.magnitude_stats(captured["block_out"][i]),
            "token_mask": mask.any(-1), "channel_mask": mask.any(1),
            "channel_absmax": jnp.max(jnp.abs(residual.astype(jnp.float32)), axis=(0, 1))[None],
            "pos0": residual[:, 0].astype(jnp.float32),
            "normed_pos0": captured["normed_input"][i][:, 0].astype(jnp.float32)}


def _blockwise_heads(attention, captured, i: int, seq_len: int, sink_eps: float) -> dict:
    q, k = captured["q"][i], captured["k"][i]
    kind = attention.spec.attention

    def probs(start, size):
        return stats.sink_view(attention.query_block_probs(q, k, start, size), kind)
    return stats.head_stats_blockwise(probs, seq_len, block=QUERY_BLOCK, eps=sink_eps)


def spike_channel_pass(model: LoadedModel, position: int, channel: int, spike_channels: np.ndarray):
    """jitted (params, tokens) -> the dominant channel's values at `position` per block (residual, output),
    `spike_channels`' values at every position per block [B, blocks, T, C], SiLU near-identity per FFN
    block and the keys at position 0 per attention block."""
    spec = model.spec
    capture = ("residual", "block_out", "ffn_gate", "qkv")
    blocks = range(1, spec.n_blocks + 1)

    @jax.jit
    def run(params, tokens):
        _, inter = apply(model.graphdef, params, tokens, capture)
        captured = collect(inter, spec.n_blocks)
        out = {"residual": jnp.stack([captured["residual"][i][:, position, channel] for i in blocks], 1),
               "output": jnp.stack([captured["block_out"][i][:, position, channel] for i in blocks], 1),
               "channel_values": jnp.stack([captured["residual"][i][:, :, spike_channels] for i in blocks], 1),
               "silu": {}, "keys0": {}}
        for i, z in captured.get("ffn_gate", {}).items():
            identity = stats.silu_identity(z)
            out["silu"][i] = {"cos": identity["cos"], "norm_ratio": identity["norm_ratio"],
                              "magnitude": jnp.max(jnp.abs(captured["block_out"][i]), -1)}
        for i, k in captured.get("k", {}).items():
            out["keys0"][i] = k[:, 0]
        return out
    return run


def residual_channels(model: LoadedModel, block: int, channels):
    """jitted (params, tokens) -> the residual after `block` at `channels` [B, T, C] (float32)."""
    @jax.jit
    def run(params, tokens):
        _, inter = apply(model.graphdef, params, tokens, ("residual",))
        return collect(inter, model.spec.n_blocks)["residual"][block][:, :, channels].astype(jnp.float32)
    return run


def spiky_at(model: LoadedModel, criterion: stats.SpikeCriterion):
    """jitted (params, tokens, position) -> bool [B]: a massive entry at `position` in any block."""
    spec = model.spec

    @jax.jit
    def spiky(params, tokens, at):
        _, inter = apply(model.graphdef, params, tokens, ("residual",))
        residual = collect(inter, spec.n_blocks)["residual"]
        flags = [stats.massive_mask(residual[i], criterion)[:, at].any(-1) for i in range(1, spec.n_blocks + 1)]
        return jnp.stack(flags).any(0)
    return spiky


def losses(model: LoadedModel):
    """jitted (params, tokens, interventions) -> per-sequence NLL; each distinct window / keep_first (static
    fields of `Interventions`) compiles once."""
    @jax.jit
    def loss(params, tokens, interventions: Interventions):
        logits, _ = apply(model.graphdef, params, tokens, (), interventions)
        return next_token_nll(logits, tokens)
    return loss


def capture_one(model: LoadedModel, tokens, name: str) -> dict:
    """{block: array} of one captured intermediate for `tokens` (no jit: a single call for a plot)."""
    _, inter = apply(model.graphdef, model.params, jnp.asarray(tokens), (name,))
    return {k: np.asarray(v) for k, v in collect(inter, model.spec.n_blocks)[name].items()}
