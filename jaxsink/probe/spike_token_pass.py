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

from jaxsink.model import apply, collect
from jaxsink.probe import stats
from jaxsink.stats.spike_tokens import mean_pairwise_cosine, participation_rank, spike_pairs


def gather_at(model, tokens, n_idx, t_idx, batch_size: int) -> dict:
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


def over_tokens(model, result, gathered, n_pairs: int) -> dict:
    """Per-block cosine and multi-hotness, and the sink keys' rank per kv group, of gathered vectors."""
    spec = model.spec
    cos = {i: mean_pairwise_cosine(v) for i, v in sorted(gathered["residual"].items())}
    hot = {i: {k: float(np.mean(x)) for k, x in stats.multi_hotness(stats.rms_normalize(v)).items()}
           for i, v in sorted(gathered["residual"].items())}
    hot_gamma = {}      # what the next block reads: RMSNorm(h) * gamma of its input norm (review P2.14)
    for i, v in sorted(gathered["residual"].items()):
        nxt = model.params["blocks"][i]["norm_in"].get("scale") if i < spec.n_blocks and "norm_in" in \
            model.params["blocks"][i] else None
        if nxt is not None:
            x = stats.rms_normalize(v) * np.asarray(nxt, np.float32)
            hot_gamma[i] = {k: float(np.mean(y)) for k, y in stats.multi_hotness(x).items()}
    group = spec.n_heads // spec.kv_heads
    sinks = collections.defaultdict(list)
    for row in result["heads"]:
        for h in row:
            if h["is_sink"] and h["block"] in gathered["k"]:
                sinks[(h["block"], h["head"] // group)].append(h["head"])
    keys = {f"{b}/kv{g}": {**(participation_rank(gathered["k"][b][:, g]) or {}), "sink_heads": heads}
            for (b, g), heads in sorted(sinks.items())}
    return {"pairs": n_pairs, "cosine_per_block": cos, "multi_hotness_per_block": hot,
            "multi_hotness_with_next_gamma_per_block": hot_gamma, "sink_keys": keys}


def spike_token_statistics(model, seqs, result, p1, opts, vocab_ids=()) -> dict:
    """The near-constancy record for probe.json; `vocab_ids` are ids that were spike tokens at position 0
    in the vocabulary probe (placed before the same context as there)."""
    up = result["step_up_blocks"]
    block = up[0] if up else result["spike_peak_block"]
    n_idx, t_idx = spike_pairs(p1["blocks"][block]["token_mask"])
    out = {"selected_at_block": block, "selected_by": "step_up" if up else "peak_block",
           "pos0_cosine_per_block": {i: float(stats.mean_pairwise_cosine(p1["blocks"][i]["pos0"]))
                                     for i in sorted(p1["blocks"])},
           "pos0_trivial": bool(result["bos"]),     # BOS at 0: one token, attending to itself: cosine 1
           "spike_tokens": None, "vocab_position_0": None}
    if len(n_idx) >= 2:
        g = gather_at(model, seqs, n_idx, t_idx, opts.batch_size)
        rec = over_tokens(model, result, g, len(n_idx))
        rec["positions"] = {int(t): int(c) for t, c in zip(*np.unique(t_idx, return_counts=True))}
        rec["prompts"] = int(len(np.unique(n_idx)))
        out["spike_tokens"] = rec
        out["before_step_up"] = rec["cosine_per_block"].get(block - 1)
        out["after_step_up"] = rec["cosine_per_block"].get(block)
    ids = np.asarray(vocab_ids, np.int32)[:256]
    if len(ids) >= 2:
        p = min(opts.vocab_position, seqs.shape[1] - 1)
        toks = np.concatenate([ids[:, None], np.tile(seqs[0, 1:p + 1], (len(ids), 1))], axis=1)
        g = gather_at(model, toks, np.arange(len(ids)), np.zeros(len(ids), int), opts.batch_size)
        out["vocab_position_0"] = {**over_tokens(model, result, g, len(ids)), "ids": ids.tolist()}
    return out
