"""Token-by-token decoding with a bounded KV cache inside `jax.jit` (a `lax.scan` over the tokens).

Keys are cached before RoPE and rotated by their position inside the cache (StreamingLLM, Xiao et al. 2024):
a slot's position is its rank among the cached tokens, the query's is the number of cached tokens - 1. When
the cache is full the new token overwrites the slot of lowest priority:
- `window`: the oldest token;  `streaming`: the oldest after the first `sinks` tokens (kept forever);
- `h2o` (Zhang et al. 2023): among tokens older than the `recent` window, the one with the least attention
  accumulated over all queries and heads so far (the heavy hitters stay);  `full`: no eviction (budget >= T).
Each attention block has its own cache (H2O's choices differ per layer). Empty slots fill first. With a
budget >= the sequence length every policy reproduces the full forward exactly (tested).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsink.impact.quant import QuantSpec, fake_quant
from jaxsink.model.attention import attention_probs
from jaxsink.model.layers import alibi_slopes, rope

POLICIES = ("full", "window", "streaming", "h2o")


class CacheError(ValueError):
    """An impossible cache policy (unknown kind, budget too small for its sinks / recent window)."""


@dataclasses.dataclass(frozen=True)
class CachePolicy:
    kind: str = "full"
    budget: int = 0          # cache slots per attention block (the current token included)
    sinks: int = 0           # streaming: the first tokens that are never evicted
    recent: int = 0          # h2o: the most recent tokens that are never evicted
    kv: QuantSpec | None = None    # quantize keys and values as they enter the cache (per token and head)
    kv_exact_first: int = 0        # ... except the first tokens (KVSink / IntactKV)

    def __post_init__(self):
        if self.kind not in POLICIES:
            raise CacheError(f"unknown cache policy {self.kind!r}; choose from {POLICIES}")
        if self.budget < 1 or self.sinks + self.recent >= self.budget + (self.kind == "full"):
            raise CacheError(f"cache budget {self.budget} leaves no room beyond sinks={self.sinks} "
                             f"recent={self.recent}")

    @property
    def label(self) -> str:
        extra = {"streaming": f"{self.sinks}+{self.budget - self.sinks}", "h2o": f"heavy+{self.recent}"}
        return f"{self.kind}:{extra.get(self.kind, self.budget)}"


def _priority(policy: CachePolicy, idx, score, t):
    """Eviction priority of every slot (lowest is overwritten); empty slots -inf, protected ones +inf."""
    age = idx.astype(jnp.float32)
    if policy.kind == "streaming":
        prio = jnp.where(idx < policy.sinks, jnp.inf, age)
    elif policy.kind == "h2o":
        prio = jnp.where(idx >= t - policy.recent, jnp.inf, score)
    else:
        prio = age
    return jnp.where(idx < 0, -jnp.inf, prio)


def _cache_positions(idx):
    """Rank of every valid slot among the cached tokens (its position inside the cache); empty slots get
    a position past every query so the causal mask hides them."""
    valid = idx >= 0
    rank = jnp.sum(valid[None, :] & (idx[None, :] < idx[:, None]), axis=1)
    return jnp.where(valid, rank, idx.shape[0] + 1), jnp.sum(valid) - 1


def _project(attn, x):
    """q [1, 1, H, d] and k, v [1, 1, Hkv, d] of one token, QK-normed, not yet rotated (as attention.py)."""
    spec = attn.spec
    q, k, v = (jnp.einsum("btd,dhk->bthk", x, w[...].astype(x.dtype)) for w in (attn.wq, attn.wk, attn.wv))
    if spec.qkv_bias:
        q, k, v = q + attn.bq[...], k + attn.bk[...], v + attn.bv[...]
    if spec.uses_qk_norm:
        q, k = attn.q_norm(q, spec), attn.k_norm(k, spec)
    return q, k, v


def _attend(attn, policy, cache, x, t, tok_emb):
    """One token through one attention block with its cache; returns (output [1, 1, d], new cache)."""
    spec = attn.spec
    q, k, v = _project(attn, x)
    if policy.kv is not None:
        exact = t < policy.kv_exact_first
        k = jnp.where(exact, k, fake_quant(k, policy.kv, (-1,)))
        v = jnp.where(exact, v, fake_quant(v, policy.kv, (-1,)))
    slot = jnp.argmin(_priority(policy, cache["idx"], cache["score"], t))
    cache = {"k": cache["k"].at[slot].set(k[0, 0]), "v": cache["v"].at[slot].set(v[0, 0]),
             "idx": cache["idx"].at[slot].set(t), "score": cache["score"].at[slot].set(0.0)}
    k_pos, q_pos = _cache_positions(cache["idx"])
    keys = cache["k"][None]
    if spec.position == "rope":
        q = rope(q, q_pos[None], spec.rope_theta, spec.rope_scaling)
        keys = rope(keys, k_pos, spec.rope_theta, spec.rope_scaling)
    probs, extra = attention_probs(
        q, keys, kind=spec.attention, q_pos=q_pos[None], k_pos=k_pos, window=spec.sliding_window,
        alibi=alibi_slopes(spec.n_heads) if spec.position == "alibi" else None,
        extra_logit=attn._extra_logit(q), sigmoid_bias=spec.sigmoid_bias)
    cache["score"] = cache["score"] + probs[0, :, 0].sum(0)
    g = spec.n_heads // spec.kv_heads
    values = jnp.repeat(cache["v"].astype(jnp.float32), g, axis=1)                  # [C, H, d]
    y = jnp.einsum("hs,shd->hd", probs[0, :, 0], values)[None, None]
    if spec.attention == "kv_bias":
        y = y + extra[0, :, 0][None, None, :, None] * jnp.repeat(attn.v_bias[...], g, axis=0)[None, None]
    ctx = {"positions": q_pos[None], "token_embedding": tok_emb}
    y = attn._gate(y.astype(x.dtype), x, ctx)
    return jnp.einsum("bthk,hkd->btd", y, attn.wo[...].astype(x.dtype)), cache


def _block(block, policy, caches, h, t, tok_emb):
    """One residual block (placements as transformer.Block) for one token."""
    placement = block.placement
    x = block.norm_in(h) if placement in ("pre", "sandwich") else h
    if block.index in caches:
        f, caches[block.index] = _attend(block.mixer, policy, caches[block.index], x, t, tok_emb)
    else:
        f = block.mixer(x, {"positions": None, "token_embedding": tok_emb})
    if placement == "post":
        return block.norm_out(h + f)
    return h + (block.norm_out(f) if placement in ("sandwich", "sandwich_qk") else f)


def _empty_caches(model, policy):
    spec = model.spec
    shape = (policy.budget, spec.kv_heads, spec.d_head)
    return {b.index: {"k": jnp.zeros(shape, spec.compute_dtype), "v": jnp.zeros(shape, spec.compute_dtype),
                      "idx": jnp.full(policy.budget, -1, jnp.int32), "score": jnp.zeros(policy.budget)}
            for b in model.blocks if hasattr(b.mixer, "wq")}


def _step(model, policy, caches, token, t):
    """One token through the whole model: (new caches, next-token logits [V])."""
    spec = model.spec
    tok = jnp.take(model.embed[...], token, axis=0)[None, None]
    h = tok + model.pos_embed[...][t][None, None] if spec.position == "learned" else tok
    h = h.astype(spec.compute_dtype)
    caches = dict(caches)
    for block in model.blocks:
        h = _block(block, policy, caches, h, t, tok)
    if spec.norm_placement != "none":
        h = model.final_norm(h)
    head = model.embed[...].T if spec.tie_embeddings else model.head[...]
    return caches, (h[0, 0] @ head.astype(h.dtype)).astype(jnp.float32)


def _scan(model, policy, seq):
    """(final caches, logits [T, V]) of one sequence decoded token by token."""
    return jax.lax.scan(lambda c, inp: _step(model, policy, c, *inp), _empty_caches(model, policy),
                        (seq, jnp.arange(seq.shape[0])))


def _check(policy, tokens):
    if policy.kind == "full" and policy.budget < tokens.shape[1]:
        raise CacheError(f"a full cache needs budget >= sequence length {tokens.shape[1]}")


def decode(graphdef, params, tokens, policy: CachePolicy):
    """Logits [B, T, V] of token-by-token decoding under `policy` (the batch is vmapped)."""
    _check(policy, tokens)
    run = lambda model, toks: jax.vmap(lambda seq: _scan(model, policy, seq)[1])(toks)  # noqa: E731
    return nnx.capture(run)(nnx.merge(graphdef, nnx.State(params)), tokens)


def kept_tokens(graphdef, params, tokens, policy: CachePolicy):
    """Token indices [B, A, C] held in each attention block's cache after the last token (which tokens a
    policy keeps: tests, and H2O's heavy hitters)."""
    _check(policy, tokens)

    def run(model, toks):
        def one(seq):
            caches = _scan(model, policy, seq)[0]
            return jnp.stack([c["idx"] for _, c in sorted(caches.items())])
        return jax.vmap(one)(toks)
    return nnx.capture(run)(nnx.merge(graphdef, nnx.State(params)), tokens)
