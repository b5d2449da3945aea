"""Compute paths chosen per backend for speed (issue 18; measurements in BENCHMARKS.md, "CPU step profile").

Every path here computes the same function as the generic one it replaces (tests/test_cpu_paths.py checks both
against the float64 NumPy reference, values and gradients); only how XLA is asked to compute it differs.

The choice is explicit, per `jax.default_backend()` (`BACKEND_PATHS`):

- `flat_dots`: dense projections of [B, T, ...] activations as one 2-D matmul over the B*T rows. XLA CPU
  canonicalises a weight gradient that contracts two leading dims (b, t) into a dot whose operand it first
  transposes in a loop fusion (`copy_bitcast_fusion`: a [d_ff, B*T] copy, fused with the SwiGLU backward, ~28%
  of the step's thread time); with one contracting dim the dot takes the operand as it is (a transposed-lhs
  GEMM). On GPU/TPU the reshape buys nothing and could interfere with activation sharding, so it is off there.
- `attention`: "explicit" is causal softmax attention written as two batched matmuls in [B, H, T, d] layout
  with an additive causal mask (`causal_attention`); on CPU it is 1.5-3x faster, forward and backward, than
  XLA's lowering of `jax.nn.dot_product_attention` ("fused"), which is kept on GPU (cuDNN) and TPU.
- `fuse_projections`: projections that read the same input (q/k/v; SwiGLU's gate and up) as one matmul
  against concatenated weights (`dense_many`); the stored parameters keep their own shapes and names.
- `attention_blocks`: the explicit attention's queries in this many blocks, each reading only the keys it
  can see (`causal_attention`): the logits above the diagonal are not computed. On CPU, 4 blocks at
  [16, 128, 4, 32], forward + backward: 12.5 vs 14.7 ms of CPU time (torch's SDPA: 12.4 ms).
- `materialize_tables`: small tables computed once (`materialized`): RoPE's cos/sin [T, d/2] and the learning
  rate of the cosine schedule (a scalar). Otherwise XLA CPU fuses them into their elementwise consumers and
  evaluates the cos/sin once per element of q and k, and the schedule's cosine once per parameter element in
  AdamW's update (`perf`: 4-4.5% of the step's CPU time in libm's `sincosf`).
"""
from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp

from jaxsink.model import partitioning as part

BACKEND_PATHS = {
    "cpu": {"flat_dots": True, "attention": "explicit", "fuse_projections": True, "materialize_tables": True,
            "attention_blocks": 4},
    "gpu": {"flat_dots": False, "attention": "fused", "fuse_projections": False, "materialize_tables": False,
            "attention_blocks": 1},
    "tpu": {"flat_dots": False, "attention": "fused", "fuse_projections": False, "materialize_tables": False,
            "attention_blocks": 1},
}
DEFAULT_PATHS = BACKEND_PATHS["tpu"]
NEG_INF = -1e30       # additive mask value: exp underflows to exactly 0, and no inf - inf NaN in the backward


def paths(backend: str | None = None) -> dict:
    """The compute paths for `backend`. Default: the platform the step is being traced for (the partitioning
    context's, so a TPU program compiled on a CPU host gets the TPU paths), else `jax.default_backend()`."""
    ctx = part.current()
    backend = backend or (ctx.platform if ctx is not None else jax.default_backend())
    return BACKEND_PATHS.get(backend, DEFAULT_PATHS)


@contextlib.contextmanager
def accelerator_paths():
    """Trace with the accelerators' paths on every backend: einsum-shaped dots on the stored weights, no
    fused or flattened projections. Code that reads a traced program's parameter matmuls (`jaxsink.impact`
    intercepts every linear layer) needs the weights as stored."""
    saved = dict(BACKEND_PATHS)
    BACKEND_PATHS.update({name: DEFAULT_PATHS for name in saved})
    try:
        yield
    finally:
        BACKEND_PATHS.update(saved)


def dense(x, w, n_in: int = 1):
    """Contract the last `n_in` dims of x with the first `n_in` dims of w (an einsum like "btd,dhk->bthk").

    With `flat_dots` the leading dims of x are flattened so XLA sees one [rows, in] x [in, out] matmul."""
    lead, inner, out = x.shape[:x.ndim - n_in], x.shape[x.ndim - n_in:], w.shape[n_in:]
    if not paths()["flat_dots"]:
        return jnp.tensordot(x, w, n_in)
    k = math.prod(inner)
    return (x.reshape(-1, k) @ w.reshape(k, -1)).reshape(*lead, *out)


def materialized(tables):
    """`tables` computed on their own (an optimization barrier keeps XLA from fusing, i.e. recomputing, them
    into their consumers) when `materialize_tables`; unchanged otherwise."""
    return jax.lax.optimization_barrier(tables) if paths()["materialize_tables"] else tables


def dense_many(x, ws):
    """[dense(x, w) for w in ws]; with `fuse_projections` (and flat dots) as one matmul against the weights
    concatenated along their output axis (q/k/v, SwiGLU gate/up): one [rows, in] x [in, sum out] GEMM
    instead of several narrow ones, then split."""
    if not (paths()["fuse_projections"] and paths()["flat_dots"]) or len(ws) < 2:
        return [dense(x, w) for w in ws]
    d = x.shape[-1]
    flat = [w.reshape(d, -1) for w in ws]
    y = x.reshape(-1, d) @ jnp.concatenate(flat, axis=1)
    cuts = [sum(w.shape[1] for w in flat[:i]) for i in range(1, len(flat))]
    return [part.reshape(*x.shape[:-1], *w.shape[1:]) for part, w in zip(jnp.split(y, cuts, axis=1), ws)]


def causal_attention(q, k, v, window: int = 0, blocks: int | None = None):
    """softmax(q k^T / sqrt(d) + causal mask) v for q [B, T, H, d], k, v [B, T, Hkv, d] -> [B, T, H, d].

    Query head h reads kv head h // (H / Hkv): the G = H / Hkv query heads of a group are stacked along the
    query axis, so k and v are never repeated. `window` > 0 keeps the keys s > t - window (sliding window).

    With `attention_blocks` = n > 1 (and n dividing T) the queries are cut into n blocks and block i attends
    only to the keys it can see (up to the end of the block, from its window's start): the keys past the
    diagonal, half of the [T, T] logits, are never computed, forward or backward, as in a blocked CPU flash
    kernel (torch's SDPA) but with an exact softmax per block (each block's row holds all its visible keys)."""
    b, t, h, d = q.shape
    hkv = k.shape[2]
    g = h // hkv
    n = blocks if blocks is not None else paths()["attention_blocks"]
    n = n if n > 1 and t % n == 0 else 1
    qg = jnp.transpose(q.reshape(b, t, hkv, g, d), (0, 2, 3, 1, 4))                  # [B, Hkv, G, T, d]
    qg = qg * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
    kt, vt = jnp.transpose(k, (0, 2, 1, 3)), jnp.transpose(v, (0, 2, 1, 3))
    pos = jnp.arange(t)
    vis = pos[None, :] <= pos[:, None]
    if window:
        vis &= pos[None, :] > pos[:, None] - window
    mask = jnp.where(vis, 0.0, NEG_INF)
    size = t // n
    outs = []
    for lo in range(0, t, size):
        hi, start = lo + size, max(0, lo - window + 1) if window else 0
        qi = qg[:, :, :, lo:hi].reshape(b, hkv, g * size, d)
        logits = jnp.einsum("bhtd,bhsd->bhts", qi, kt[:, :, start:hi], preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(logits + jnp.tile(mask[lo:hi, start:hi], (g, 1)), axis=-1).astype(v.dtype)
        outs.append(jnp.einsum("bhts,bhsd->bhtd", probs, vt[:, :, start:hi]).reshape(b, hkv, g, size, d))
    y = outs[0] if n == 1 else jnp.concatenate(outs, axis=3)                         # [B, Hkv, G, T, d]
    return jnp.transpose(y, (0, 3, 1, 2, 4)).reshape(b, t, h, d)
