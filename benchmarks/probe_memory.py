"""Memory of the probe's attention statistics against sequence length: dense probabilities (~T^2 per head)
vs query blocks (~T x block per head).

    python benchmarks/probe_memory.py [--lengths 256 512 1024 2048 4096 8192] [--block 256]

Queries and keys of one attention layer (4 heads x 32) are the inputs; each statistics function is compiled
on its own and XLA's `memory_analysis()` gives its temporary buffer size (what the function itself needs on
top of its inputs and outputs), with the wall time of one call. The model's forward pass is not included:
on CPU XLA's attention materialises T x T logits, on GPU/TPU the fused kernels do not.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def measure(t: int, block: int, heads: int = 4, d_head: int = 32, dense: bool = True) -> dict:
    from jaxsink.model.attention import attention_probs
    from jaxsink import stats
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(1, t, heads, d_head)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, t, heads, d_head)), jnp.float32)
    pos = jnp.arange(t)

    def probs(q, k, start, size):
        qb = jax.lax.dynamic_slice_in_dim(q, start, size, axis=1)
        return attention_probs(qb, k, kind="softmax", q_pos=start + jnp.arange(size), k_pos=pos)[0]

    fns = {"blockwise": lambda q, k: stats.head_stats_blockwise(lambda a, b: probs(q, k, a, b), t, block)}
    if dense:
        fns["dense"] = lambda q, k: stats.head_stats(probs(q, k, 0, t))
    row = {"T": t}
    for name, fn in fns.items():
        compiled = jax.jit(fn).lower(q, k).compile()
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(q, k))
        row[f"{name}_temp_mb"] = compiled.memory_analysis().temp_size_in_bytes / 2**20
        row[f"{name}_s"] = time.perf_counter() - t0
        row[f"{name}_first_token_mass"] = float(out["first_token_mass"][0, 0])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--dense-max", type=int, default=8192)
    args = p.parse_args()
    rows = []
    for t in args.lengths:
        r = measure(t, args.block, dense=t <= args.dense_max)
        rows.append(r)
        dense = f"dense {r['dense_temp_mb']:9.1f} MB {r['dense_s']:6.2f} s" if "dense_temp_mb" in r else "dense skipped"
        print(f"T={t:>5}: blockwise {r['blockwise_temp_mb']:8.1f} MB {r['blockwise_s']:6.2f} s   {dense}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
