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
    "cpu": {"flat_dots": True, "attention": "explicit", "fuse_projections": True, "materialize_tables": True},
    "gpu": {"flat_dots": False, "attention": "fused", "fuse_projections": False, "materialize_tables": False},
    "tpu": {"flat_dots": False, "attention": "fused", "fuse_projections": False, "materialize_tables": False},
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


def causal_attention(q, k, v, window: int = 0):
    """softmax(q k^T / sqrt(d) + causal mask) v for q [B, T, H, d], k, v [B, T, Hkv, d] -> [B, T, H, d].

    Query head h reads kv head h // (H / Hkv): the G = H / Hkv query heads of a group are stacked along the
    query axis, so k and v are never repeated. `window` > 0 keeps the keys s > t - window (sliding window)."""
    b, t, h, d = q.shape
    hkv = k.shape[2]
    g = h // hkv
    qg = jnp.transpose(q.reshape(b, t, hkv, g, d), (0, 2, 3, 1, 4)).reshape(b, hkv, g * t, d)
    kt, vt = jnp.transpose(k, (0, 2, 1, 3)), jnp.transpose(v, (0, 2, 1, 3))
    qg = qg * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
    logits = jnp.einsum("bhtd,bhsd->bhts", qg, kt, preferred_element_type=jnp.float32)
    pos = jnp.arange(t)
    vis = pos[None, :] <= pos[:, None]
    if window:
        vis &= pos[None, :] > pos[:, None] - window
    logits = logits + jnp.tile(jnp.where(vis, 0.0, NEG_INF), (g, 1))
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = jnp.einsum("bhts,bhsd->bhtd", probs, vt)                                   # [B, Hkv, G*T, d]
    return jnp.transpose(y.reshape(b, hkv, g, t, d), (0, 3, 1, 2, 4)).reshape(b, t, h, d)
