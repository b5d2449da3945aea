"""Fused causal attention: the Pallas splash-attention kernel on TPU, `jax.nn.dot_product_attention` elsewhere.

On TPU, `jax.nn.dot_product_attention` has no Pallas implementation (its `cudnn` path is GPU-only) and
lowers to XLA's softmax(QK^T)V with the [B, H, T, T] logits in HBM. The splash kernel (Pallas/Mosaic,
`jax.experimental.pallas.ops.tpu.splash_attention`) keeps blocks of the attention in VMEM and never writes
the T x T matrix; a Mosaic kernel cannot be partitioned by GSPMD, so it runs under `jax.shard_map` with the
batch over the `activation_batch` mesh axes and heads over `activation_heads` (what MaxText does). The kernel
appears in the compiled HLO as a `tpu_custom_call` (benchmarks/compile_topologies.py shows it).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxsink.model import partitioning as part

BLOCK = 512          # splash tiles (query and key blocks); T must be a multiple of 128


def fused_attention(q, k, v, sliding_window: int = 0, interpret: bool = False):
    """Causal (optionally sliding-window) softmax attention, q [B, T, H, d], k/v [B, T, Hkv, d] -> [B, T, H, d]."""
    ctx = part.current()
    if interpret or (ctx is not None and ctx.platform == "tpu" and q.shape[1] % 128 == 0):
        return splash_attention(q, k, v, sliding_window, interpret=interpret)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=(
        (sliding_window - 1, 0) if sliding_window else None))


def splash_attention(q, k, v, sliding_window: int = 0, interpret: bool = False):
    """The splash kernel per sequence (vmapped over the local batch), inside `shard_map` when a mesh is active."""
    b, t, h, d = q.shape
    hkv = k.shape[2]
    mesh = part.active_mesh()
    if mesh is None:
        return _splash_local(q, k, v, window=sliding_window, interpret=interpret)
    rules = part.current().rules
    batch = part.spec_for((part.BATCH,), (b,), rules, mesh)[0]
    heads = part.spec_for((part.HEADS,), (hkv,), rules, mesh)[0]    # kv heads split as their query groups
    if heads is not None and part.spec_for((part.HEADS,), (h,), rules, mesh)[0] != heads:
        heads = None
    spec = P(batch, None, heads, None)
    fn = functools.partial(_splash_local, window=sliding_window, interpret=interpret)
    return jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)


def _splash_local(q, k, v, *, window: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as splash
    b, t, h, d = q.shape
    one = splash.LocalMask((t, t), (window - 1, 0), 0) if window else splash.CausalMask((t, t))
    block = min(BLOCK, t)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    kernel = splash.make_splash_mha(splash.MultiHeadMask([one] * h), head_shards=1, q_seq_shards=1,
                                    block_sizes=sizes, interpret=interpret)
    scale = jnp.asarray(d ** -0.5, q.dtype)
    heads_first = lambda x: jnp.transpose(x, (0, 2, 1, 3))           # noqa: E731  [B, H, T, d]
    out = jax.vmap(kernel)(heads_first(q * scale), heads_first(k), heads_first(v))
    return heads_first(out)
