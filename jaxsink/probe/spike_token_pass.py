"""Near-constancy and sink-key rank over real spike tokens (review P1.1), as the probe runs them.

The spike tokens are the (prompt, position) pairs flagged at the first step-up block (the peak block when
the life cycle finds none), thinned to `spike_tokens.MAX_PAIRS`; a second set is the vocabulary probe's
inputs whose position 0 became a spike token (many different ids at position 0). For each set this pass
gathers the residual after every block and the keys of every attention block at those tokens, then gives
per block the mean pairwise cosine (Eq. 25), the multi-hotness (Eq. 24) and, per kv group that holds a sink
head, the effective rank of its keys. Position 0 under BOS (one token in every prompt) is kept only as
`pos0_cosine_per_block`, marked trivial.
"""
from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np

from jaxsink import stats
from jaxsink.model import apply, collect
from jaxsink.model.loaded import LoadedModel
from jaxsink.probe.result import HeadRow, KeyRank, NearConstancy, SpikeTokenSet
from jaxsink.stats.spike_tokens import mean_pairwise_cosine, participation_rank, spike_pairs


def gather_at(model: LoadedModel, tokens, n_idx, t_idx, batch_size: int) -> dict:
    """{"residual": {block: [M, D]}, "k": {block: [M, Hkv, dh]}} at the pairs (tokens[n], position t): one
    forward per prompt that holds a pair, in batches; the pairs are read on the host."""
    spec = model.spec

    @jax.jit
    def run(params, toks):
        _, inter = apply(model.graphdef, params, toks, ("residual", "qkv"))
        c = collect(inter, spec.n_blocks)
        return {"residual": {i: r.astype(jnp.float32) for i, r in c["residual"].items()},
                "k": {i: k.astype(jnp.float32) for i, k in c.get("k", {}).items()}}

    prompts = np.unique(n_idx)
    parts = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s:s + batch_size]
        out = jax.device_get(run(model.params, jnp.asarray(np.asarray(tokens)[chunk])))
        sel = np.isin(n_idx, chunk)
        local = np.searchsorted(chunk, n_idx[sel])
        parts.append((np.flatnonzero(sel), jax.tree.map(lambda x: np.asarray(x)[local, t_idx[sel]], out)))
    order = np.argsort(np.concatenate([i for i, _ in parts]))
    return jax.tree.map(lambda *xs: np.concatenate(xs)[order], *[g for _, g in parts])


def _multi_hotness(v) -> dict[str, float]:
    return {k: float(np.mean(x)) for k, x in stats.multi_hotness(v).items()}


def _sink_key_ranks(model: LoadedModel, heads: list[list[HeadRow]], keys: dict) -> dict[str, KeyRank]:
    """Rank of the gathered keys per kv group that holds a sink head ("block/kvG"); GQA shares one key
    among the group's query heads, so each group is counted once (review P2.14)."""
    group = model.spec.n_heads // model.spec.kv_heads
    sinks = collections.defaultdict(list)
    for row in heads:
        for h in row:
            if h.is_sink and h.block in keys:
                sinks[(h.block, h.head // group)].append(h.head)
    return {f"{b}/kv{g}": KeyRank(sink_heads=members, **(participation_rank(keys[b][:, g]) or {}))
            for (b, g), members in sorted(sinks.items())}


def over_tokens(model: LoadedModel, heads: list[list[HeadRow]], gathered: dict, n_pairs: int) -> SpikeTokenSet:
    """Per-block cosine and multi-hotness (scale-free, so that of RMSNorm(h) too; and of RMSNorm(h) * gamma of
    the next block's input norm, what that block reads: review P2.14), and the sink keys' rank per kv group."""
    residual = dict(sorted(gathered["residual"].items()))
    with_gamma = {}
    for i, v in residual.items():
        gamma = model.input_norm_scale(i + 1) if i < model.spec.n_blocks else None
        if gamma is not None:
            with_gamma[i] = _multi_hotness(np.asarray(v) * np.asarray(gamma, np.float32))
    return SpikeTokenSet(pairs=n_pairs, cosine_per_block={i: mean_pairwise_cosine(v) for i, v in residual.items()},
                         multi_hotness_per_block={i: _multi_hotness(v) for i, v in residual.items()},
                         multi_hotness_with_next_gamma_per_block=with_gamma,
                         sink_keys=_sink_key_ranks(model, heads, gathered["k"]))


def spike_token_statistics(model: LoadedModel, seqs, block_stats: dict, heads: list[list[HeadRow]],
                           step_up: list[int], peak_block: int, bos: bool, opts, vocab_ids=()) -> NearConstancy:
    """The near-constancy record of probe.json over the pairs flagged at the first step-up block (the peak
    block without one); `vocab_ids` are ids that were spike tokens at position 0 in the vocabulary probe
    (placed before the same context as there). `opts`: the probe's batch_size and vocab_position."""
    block = step_up[0] if step_up else peak_block
    n_idx, t_idx = spike_pairs(block_stats["blocks"][block]["token_mask"])
    out = NearConstancy(selected_at_block=block, selected_by="step_up" if step_up else "peak_block",
                        pos0_cosine_per_block={i: float(stats.mean_pairwise_cosine(b["pos0"]))
                                               for i, b in sorted(block_stats["blocks"].items())},
                        pos0_trivial=bool(bos),     # BOS at 0: one token, attending to itself: cosine 1
                        spike_tokens=None, vocab_position_0=None)
    if len(n_idx) >= 2:
        rec = over_tokens(model, heads, gather_at(model, seqs, n_idx, t_idx, opts.batch_size), len(n_idx))
        rec.positions = {int(t): int(c) for t, c in zip(*np.unique(t_idx, return_counts=True))}
        rec.prompts = int(len(np.unique(n_idx)))
        out.spike_tokens = rec
        out.before_step_up, out.after_step_up = rec.cosine_per_block.get(block - 1), rec.cosine_per_block.get(block)
    ids = np.asarray(vocab_ids, np.int32)[:256]
    if len(ids) >= 2:
        p = min(opts.vocab_position, seqs.shape[1] - 1)
        toks = np.concatenate([ids[:, None], np.tile(seqs[0, 1:p + 1], (len(ids), 1))], axis=1)
        g = gather_at(model, toks, np.arange(len(ids)), np.zeros(len(ids), int), opts.batch_size)
        out.vocab_position_0 = over_tokens(model, heads, g, len(ids))
        out.vocab_position_0.ids = ids.tolist()
    return out
