"""Cross-entropy from the final hidden states in chunks of positions: never the whole [B, T, V] logits.

At the paper's scale the float32 logits of one step are 512 x 4096 x 32000 x 4 B = 268 GB, and their
gradient as much again. `chunked_nll` scans over chunks of positions; each chunk's logits
(h_c @ W_head, the same bf16 matmul and float32 log-softmax as the unchunked path) are recomputed in the
backward pass (`jax.checkpoint`), so at most one chunk of logits per chip is live at a time. Chunks split
the sequence, not the batch, so the batch stays split over the mesh.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsink.model.partitioning import BATCH, LENGTH, VOCAB, constrain

MAX_CHUNK = 1024     # positions per chunk (a divisor of T; T itself when T is short)


def chunk_size(seq_len: int, max_chunk: int = MAX_CHUNK) -> int:
    """Largest divisor of `seq_len` not above `max_chunk`."""
    return max(c for c in range(1, min(seq_len, max_chunk) + 1) if seq_len % c == 0)


def token_nll_from_logits(logits, targets):
    """Per-token negative log-likelihood in float32, [B, T]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def chunked_nll(h, head, targets, max_chunk: int = MAX_CHUNK):
    """NLL [B, T] of `targets` under logits h @ head (h [B, T, D], head [D, V]), one chunk of positions at a time."""
    b, t, d = h.shape
    c = chunk_size(t, max_chunk)

    @jax.checkpoint
    def one(h_c, y_c):
        logits = constrain((h_c @ head.astype(h_c.dtype)).astype(jnp.float32), BATCH, LENGTH, VOCAB)
        return token_nll_from_logits(logits, y_c)

    if c == t:
        return one(h, targets)
    hs = jnp.moveaxis(h.reshape(b, t // c, c, d), 1, 0)              # [n, B, c, D]
    ys = jnp.moveaxis(targets.reshape(b, t // c, c), 1, 0)
    nll = jax.lax.map(lambda xs: one(*xs), (hs, ys))                   # [n, B, c]
    return jnp.moveaxis(nll, 0, 1).reshape(b, t)
