"""Training-time spike and sink statistics, computed inside the jitted step (Levanter's `inside_step` idea)
by a separate forward-only pass over the first `stats.sequences` sequences of the first micro-batch, cut to
their first `stats.sink_seq_len` positions (`train/step.py`; the gradient pass stays the plain one), and
logged to metrics.jsonl / TensorBoard.

Keys: `spike` (top-1 |h| over blocks, mean over sequences), `spike/top1` and `spike/median` per block,
`spike/position` (position of the largest |h| in the batch), `spike/pos0_share` (share of sequences whose
largest |h| sits at position 0), `sink_ratio` (paper Eq. 28) and `first_token_mass` per attention block.
Sink statistics use the first `stats.sink_seq_len` positions of each training sequence: with causal
attention those rows are exactly the attention of a sequence of that length (the paper's T = 64). Where
uniform attention already passes eps at that T (T <= 9 at eps 0.3) no sink statistics are logged
(`jaxsink.stats.sink_validity`). Sigmoid attention is read through Gu et al.'s proxy scores
(`stats.sink_view`), as in the probe.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxsink.data import bb_guo
from jaxsink.model import collect
from jaxsink import stats
from jaxsink.stats.bos_sink import bos_stats
from jaxsink.stats.sink_validity import sink_ratio_defined

CAPTURE = ("residual", "attn_probs")


def stats_positions(cfg) -> int:
    """Positions of each sequence the statistics pass reads: the paper's sink T (`stats.sink_seq_len`),
    except on Guo et al.'s Bigram-Backcopy corpus, whose BOS-sink dynamics are defined over the whole
    training sequence (their T = 256; uniform attention reads 0.024 there and 0.074 over 64 positions), so
    the pass reads all `train.seq_len` positions and the sink statistics still take the first
    `sink_seq_len` of them."""
    return cfg.train.seq_len if cfg.data.corpus == bb_guo.NAME else cfg.stats.sink_seq_len


def training_stats(cfg):
    """(capture names, stats_fn) for `train(..., stats=...)`."""
    n_blocks = 2 * cfg.model.n_layers
    eps, t_sink = cfg.stats.sink_eps, min(cfg.stats.sink_seq_len, cfg.train.seq_len)
    kind = cfg.model.attention
    triggers = bb_guo.shipped_task().trigger_ids if cfg.data.corpus == bb_guo.NAME else None

    def stats_fn(inter, inputs=None) -> dict:
        c = collect(inter, n_blocks)
        per_block = [stats.magnitude_stats(c["residual"][i]) for i in range(1, n_blocks + 1)]
        top1 = jnp.stack([m["top3"][:, 0] for m in per_block])                  # [n_blocks, B]
        median = jnp.stack([m["median"] for m in per_block])
        best = jnp.argmax(top1, axis=0)                                          # block of each sequence's max
        positions = jnp.stack([m["argmax_position"] for m in per_block])          # [n_blocks, B]
        seq_pos = jnp.take_along_axis(positions, best[None], axis=0)[0]
        flags, mass = [], []
        for block in sorted(c.get("attn_probs", {}) if sink_ratio_defined(t_sink, eps) else ()):
            h = stats.head_stats(stats.sink_view(c["attn_probs"][block][:, :, :t_sink, :t_sink], kind), eps)
            flags.append(h["is_sink"])
            mass.append(jnp.mean(h["first_token_mass"]))
        out = {"spike": stats.spike_top1(top1), "spike/top1": jnp.mean(top1, axis=1),
               "spike/median": jnp.mean(median, axis=1),
               "spike/position": positions.reshape(-1)[jnp.argmax(top1.reshape(-1))],
               "spike/pos0_share": jnp.mean(seq_pos == 0)}
        if flags:
            out["sink_ratio"] = stats.sink_ratio(jnp.stack(flags))
            out["first_token_mass"] = jnp.stack(mass)
        if triggers is not None and inputs is not None:   # Guo et al.'s BOS-sink dynamics (bb_guo corpus)
            out.update(bos_stats(c, inputs, triggers, n_blocks))
        return out

    return (CAPTURE + ("qkv",) if triggers is not None else CAPTURE), stats_fn
