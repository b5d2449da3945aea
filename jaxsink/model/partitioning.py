"""Activation sharding by logical axes at layer boundaries (MaxText's `maybe_shard_with_logical`).

Parameters alone do not tell GSPMD how to split activations: with the embedding axis over `fsdp` it may
keep the whole [B, T, D] residual stream (and [B, T, V] logits) on every chip (tpu-aot.md: 424 GiB per chip
for 2 of the 7B's 32 layers). The steps therefore trace the model inside `partitioning(rules, platform)`,
and the model pins its activations with `constrain(x, "activation_batch", "activation_length", ...)`;
outside that context (eager code, tests, the probe) `constrain` is the identity. The context also tells the
model which platform it is compiled for (the default backend can be CPU while compiling for a TPU).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools

import jax
from jax.sharding import PartitionSpec as P

BATCH, LENGTH, EMBED = "activation_batch", "activation_length", "activation_embed"
HEADS, KV_HEADS, MLP, VOCAB = "activation_heads", "activation_kv_heads", "activation_mlp", "activation_vocab"


@dataclasses.dataclass(frozen=True)
class Partitioning:
    rules: dict                 # logical axis -> tuple of mesh axes (sharding.rules_from_config)
    platform: str = "cpu"       # what the step is compiled for: tpu | gpu | cpu


_CURRENT: contextvars.ContextVar = contextvars.ContextVar("jaxsink_partitioning", default=None)


@contextlib.contextmanager
def partitioning(rules: dict, platform: str = "cpu"):
    token = _CURRENT.set(Partitioning(dict(rules), platform))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> Partitioning | None:
    return _CURRENT.get()


def partitioned(fn, rules: dict, platform: str):
    """`fn` traced inside `partitioning(rules, platform)` (wrap a step before `jax.jit`)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with partitioning(rules, platform):
            return fn(*args, **kwargs)
    return wrapped


def spec_for(logical_axes, shape, rules, mesh) -> P:
    """PartitionSpec for one array: each logical axis -> its mesh axes that divide the dimension (a mesh
    axis is used once; one that does not divide is dropped, as MaxText's indivisible-shape adjustment)."""
    out, used = [], set()
    for name, dim in zip(logical_axes, shape):
        axes = [a for a in rules.get(name, ()) if a not in used] if name else []
        size, kept = 1, []
        for a in axes:
            if dim % (size * mesh.shape[a]) == 0:
                kept.append(a)
                size *= mesh.shape[a]
        used.update(kept)
        out.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return P(*out)


def active_mesh():
    """The abstract mesh of the enclosing `jax.set_mesh`, or None (no mesh, or no partitioning context)."""
    if current() is None:
        return None
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def constrain(x, *logical_axes):
    """`x` with its sharding pinned by logical axis names (identity outside `partitioning`)."""
    mesh = active_mesh()
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, spec_for(logical_axes, x.shape, current().rules, mesh))
