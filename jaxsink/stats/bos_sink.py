"""BOS-sink statistics of Guo et al. 2024 (arXiv 2410.13835, §3 and Fig. 4; their `BBM/probe_utils.py`,
`get_dynamic_summary`): pure functions of captured intermediates, used inside the training step and by
the testbed's end-of-run measurement (`jaxsink.bb_seeds`).

- `bos_attention`: attention on the first key (BOS) averaged over the non-trigger queries (their
  `attn_weights[:, h, :, 0][~triggers_pos].mean()`; query 0, BOS itself, is a non-trigger query and
  counts, which puts the uniform-attention value at (1/T) sum_t 1/(t+1) = 0.024 for T = 256).
- `bos_value_norm`: ||v_0||, the value vector of BOS per head (their `value_states[0, h, 0, :]`).
- `bos_residual_norm`: ||h_0||, the residual stream at BOS after a block (their layer `output[0, 0, :]`),
  and `bos_residual_ratio`, ||h_0|| over the median ||h_t|| of the other positions (the massive
  activation is a ratio far above 1).
All are means over the batch; the first token of every sequence is BOS, so in the first layer they are
the same for every sequence.
"""
from __future__ import annotations

import jax.numpy as jnp


def nontrigger_queries(inputs, trigger_ids):
    """[B, T] bool: the query's own token (the model input at t) is not a trigger."""
    return ~jnp.isin(inputs, jnp.asarray(trigger_ids, inputs.dtype))


def bos_attention(probs, query_mask):
    """Mean over the masked queries of A[b, h, t, 0], per head: probs [B, H, T, T], mask [B, T] -> [H]."""
    w = query_mask.astype(jnp.float32)[:, None, :]
    first = probs[..., 0].astype(jnp.float32)                     # [B, H, T]
    return jnp.sum(first * w, axis=(0, 2)) / jnp.maximum(jnp.sum(w, axis=(0, 2)), 1.0)


def bos_value_norm(v):
    """||v[b, 0, h]|| averaged over the batch: v [B, T, H, d] -> [H]."""
    return jnp.mean(jnp.linalg.norm(v[:, 0].astype(jnp.float32), axis=-1), axis=0)


def bos_residual_norm(h):
    """||h[b, 0]|| averaged over the batch: h [B, T, D] -> scalar."""
    return jnp.mean(jnp.linalg.norm(h[:, 0].astype(jnp.float32), axis=-1))


def bos_residual_ratio(h):
    """||h[b, 0]|| / median_t>0 ||h[b, t]||, averaged over the batch: h [B, T, D] -> scalar."""
    norms = jnp.linalg.norm(h.astype(jnp.float32), axis=-1)        # [B, T]
    return jnp.mean(norms[:, 0] / jnp.median(norms[:, 1:], axis=1))


def bos_stats(collected: dict, inputs, trigger_ids, n_blocks: int) -> dict:
    """The `bos/*` training statistics from `jaxsink.model.collect` output (needs residual, attn_probs,
    qkv): per attention layer the head-mean BOS attention of non-trigger queries and BOS value norm, per
    block the BOS residual norm and ratio."""
    mask = nontrigger_queries(inputs, trigger_ids)
    attn_blocks = sorted(collected.get("attn_probs", {}))
    out = {}
    if attn_blocks:
        out["bos/attention"] = jnp.stack([jnp.mean(bos_attention(collected["attn_probs"][b], mask))
                                          for b in attn_blocks])
    if "v" in collected:
        out["bos/value_norm"] = jnp.stack([jnp.mean(bos_value_norm(collected["v"][b])) for b in sorted(collected["v"])])
    res = [collected["residual"][i] for i in range(1, n_blocks + 1)]
    out["bos/residual_norm"] = jnp.stack([bos_residual_norm(h) for h in res])
    out["bos/residual_ratio"] = jnp.stack([bos_residual_ratio(h) for h in res])
    return out
