"""Causal self-attention with every normaliser, gate and position scheme the ablations need.

`attention_probs` is a pure function (shared by the model and by the probe's blockwise statistics);
`Attention` owns the parameters and sows q/k/v, probabilities and gate values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsink.model.capture import QKV, AttnGate, AttnProbs
from jaxsink.model.cpu_paths import causal_attention, dense, dense_many, paths
from jaxsink.model.flash import fused_attention
from jaxsink.model.layers import alibi_slopes, const_param, out_std, param, rms_normalize, rope
from jaxsink.model.spec import ModelSpec

# attention kinds with an extra always-visible slot in the softmax (value 0 unless kv_bias)
EXTRA_SLOT = ("sink_logit", "softmax1", "k_bias", "kv_bias")


def visible_mask(q_pos, k_pos, window: int, keep_first: int = 0):
    """Key s is visible to query t iff s <= t and, with a sliding window W, s > t - W or s < keep_first
    (StreamingLLM's window attention that keeps the first `keep_first` tokens as sinks)."""
    vis = k_pos[None, :] <= q_pos[:, None]
    if window:
        vis &= (k_pos[None, :] > q_pos[:, None] - window) | (k_pos[None, :] < keep_first)
    return vis


def attention_probs(q, k, *, kind: str, q_pos, k_pos, window: int = 0, keep_first: int = 0, alibi=None,
                    extra_logit=None, sigmoid_bias: float = 0.0, drop_first_key=None, drop_key=None):
    """Probabilities [B, H, Tq, Tk] over real keys, and the extra slot's mass [B, H, Tq] (or None).

    q: [B, Tq, H, d] (already QK-normed and rotated), k: [B, Tk, Hkv, d]; query head h reads kv head
    h // (H / Hkv). `extra_logit` [B, H, Tq] is the logit of the always-visible extra slot
    (sink logit, 0 for softmax-off-by-one, q.k_bias for key biases). `drop_first_key` [H] bool hides key 0
    from the queries t >= 1 of those heads (an intervention on the sink; query 0 keeps its only key);
    `drop_key` [H] int hides key drop_key[h] from the queries t > drop_key[h] of head h (-1: none).
    Computed in float32.
    """
    b, tq, h, d = q.shape
    hkv = k.shape[2]
    qg = q.astype(jnp.float32).reshape(b, tq, hkv, h // hkv, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(jnp.float32)).reshape(b, h, tq, -1)
    logits = logits / jnp.sqrt(jnp.float32(d))
    if alibi is not None:
        dist = (q_pos[:, None] - k_pos[None, :]).astype(jnp.float32)
        logits = logits - alibi[None, :, None, None] * dist[None, None]
    vis = visible_mask(q_pos, k_pos, window, keep_first)[None, None]
    if drop_first_key is not None:
        dropped = (k_pos[None, :] == 0) & (q_pos[:, None] > 0)
        vis = vis & ~(jnp.asarray(drop_first_key)[:, None, None] & dropped[None])[None]
    if drop_key is not None:
        kh = jnp.asarray(drop_key)[:, None, None]
        vis = vis & ~((k_pos[None, None, :] == kh) & (q_pos[None, :, None] > kh) & (kh >= 0))[None]
    if kind == "sigmoid":
        return jnp.where(vis, jax.nn.sigmoid(logits + sigmoid_bias), 0.0), None
    if kind == "relu":   # Guo et al. 2024 (BBM/model.py): relu(logit) / (t + 1), no normalisation
        return jnp.where(vis, jax.nn.relu(logits), 0.0) / (q_pos[:, None] + 1.0).astype(jnp.float32), None
    logits = jnp.where(vis, logits, -jnp.inf)
    if extra_logit is None:
        return jax.nn.softmax(logits, axis=-1), None
    full = jax.nn.softmax(jnp.concatenate([extra_logit[..., None], logits], axis=-1), axis=-1)
    return full[..., 1:], full[..., 0]


class Attention(nnx.Module):
    """Multi-head attention (paper Eq. 6-11) with GQA, QK-norm, RoPE/ALiBi, extra slots and gates."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs):
        self.spec = spec
        d, h, hkv, dh, std = spec.d_model, spec.n_heads, spec.kv_heads, spec.d_head, spec.init_std
        self.wq = param(rngs, (d, h, dh), ("embed", "heads", "head_dim"), std)
        self.wk = param(rngs, (d, hkv, dh), ("embed", "kv_heads", "head_dim"), std)
        self.wv = param(rngs, (d, hkv, dh), ("embed", "kv_heads", "head_dim"), std)
        self.wo = param(rngs, (h, dh, d), ("heads", "head_dim", "embed"), out_std(spec))
        if spec.qkv_bias:
            self.bq = param(rngs, (h, dh), ("heads", "head_dim"), 0.0)
            self.bk = param(rngs, (hkv, dh), ("kv_heads", "head_dim"), 0.0)
            self.bv = param(rngs, (hkv, dh), ("kv_heads", "head_dim"), 0.0)
        if spec.uses_qk_norm:
            q_dim, k_dim = (dh, dh) if spec.qk_norm_scope == "head" else (h * dh, hkv * dh)
            self.q_norm = QKNorm(q_dim)
            self.k_norm = QKNorm(k_dim)
        if spec.attention == "sink_logit":
            self.sink_logit = const_param(jnp.zeros(h), ("heads",))
        if spec.attention in ("k_bias", "kv_bias"):
            self.k_bias = param(rngs, (hkv, dh), ("kv_heads", "head_dim"), std)
        if spec.attention == "kv_bias":
            self.v_bias = param(rngs, (hkv, dh), ("kv_heads", "head_dim"), std)
        self._init_gate(spec, rngs)

    def _init_gate(self, spec: ModelSpec, rngs: nnx.Rngs):
        d, h, dh, std = spec.d_model, spec.n_heads, spec.d_head, spec.init_std
        shapes = {"cond_channel": ((d, h, dh), ("embed", "heads", "head_dim")),
                  "cond_head": ((d, h), ("embed", "heads")),
                  "cond_single": ((d, 1), ("embed", None)),
                  "static_token": ((d, h), ("embed", "heads"))}
        thetas = {"uncond_channel": ((h, dh), ("heads", "head_dim")),
                  "uncond_head": ((h,), ("heads",)), "uncond_single": ((1,), (None,))}
        if spec.gate in shapes:
            self.gate_w = param(rngs, *shapes[spec.gate], std)
        elif spec.gate in thetas:
            self.gate_theta = param(rngs, *thetas[spec.gate], 0.0)
        elif spec.gate == "static_position":
            self.gate_table = param(rngs, (spec.max_seq_len, h), ("position", "heads"), 0.0)

    def __call__(self, x, ctx):
        spec, dt = self.spec, x.dtype
        q, k, v = dense_many(x, [w[...].astype(dt) for w in (self.wq, self.wk, self.wv)])
        if spec.qkv_bias:
            q, k, v = q + self.bq[...].astype(dt), k + self.bk[...].astype(dt), v + self.bv[...].astype(dt)
        if spec.uses_qk_norm:
            q, k = self.q_norm(q, spec), self.k_norm(k, spec)
        pos = ctx["positions"]
        if spec.position == "rope":
            q, k = rope(q, pos, spec.rope_theta, spec.rope_scaling), rope(k, pos, spec.rope_theta, spec.rope_scaling)
        self.sow(QKV, "q", q)
        self.sow(QKV, "k", k)
        self.sow(QKV, "v", v)
        if self._fusable(ctx) and paths()["attention"] == "explicit":
            y = causal_attention(q, k, v, spec.sliding_window)     # CPU (cpu_paths.py)
        elif self._fusable(ctx):
            y = fused_attention(q, k, v, spec.sliding_window)     # splash kernel on TPU (flash.py)
        else:
            y = self._explicit(q, k, v, pos, ctx)
        y = self._gate(y.astype(dt), x, ctx)
        return dense(y, self.wo[...].astype(dt), n_in=2)

    def _fusable(self, ctx) -> bool:
        """The fused kernel (cuDNN on GPU, XLA elsewhere) covers plain causal softmax attention, used when
        nobody captures the probabilities and no intervention edits the mask."""
        spec = self.spec
        return (ctx["fused"] and spec.attention == "softmax" and spec.position != "alibi"
                and not ctx["interventions"].edits_attention)

    def _explicit(self, q, k, v, pos, ctx):
        spec, edits = self.spec, ctx["interventions"]
        probs, extra = attention_probs(
            q, k, kind=spec.attention, q_pos=pos, k_pos=pos, window=edits.attention_window(spec.sliding_window),
            keep_first=edits.keep_first, alibi=alibi_slopes(spec.n_heads) if spec.position == "alibi" else None,
            extra_logit=self._extra_logit(q), sigmoid_bias=spec.sigmoid_bias,
            drop_first_key=edits.dropped_first_key(ctx["block"]), drop_key=edits.dropped_key(ctx["block"]))
        self.sow(AttnProbs, "attn_probs", probs)
        return self._mix_values(probs, extra, v)

    def query_block_probs(self, q, k, start, size: int):
        """Probabilities of queries start..start+size-1 over all keys, from captured (normed, rotated) q and
        k: what a probe needs for attention statistics of long sequences block by block (`start` may be
        traced inside a scan; `size` is static)."""
        spec = self.spec
        pos = jnp.arange(k.shape[1])
        qb = jax.lax.dynamic_slice_in_dim(q, start, size, axis=1)
        probs, _ = attention_probs(
            qb, k, kind=spec.attention, q_pos=start + jnp.arange(size), k_pos=pos, window=spec.sliding_window,
            alibi=alibi_slopes(spec.n_heads) if spec.position == "alibi" else None,
            extra_logit=self._extra_logit(qb), sigmoid_bias=spec.sigmoid_bias)
        return probs

    def _extra_logit(self, q):
        spec = self.spec
        b, t, h, dh = q.shape
        if spec.attention == "sink_logit":
            return jnp.broadcast_to(self.sink_logit[...][None, :, None], (b, h, t))
        if spec.attention == "softmax1":
            return jnp.zeros((b, h, t), jnp.float32)
        if spec.attention in ("k_bias", "kv_bias"):
            kb = jnp.repeat(self.k_bias[...], h // spec.kv_heads, axis=0)          # [H, d]
            return jnp.einsum("bthd,hd->bht", q.astype(jnp.float32), kb) / jnp.sqrt(jnp.float32(dh))
        return None

    def _mix_values(self, probs, extra, v):
        spec = self.spec
        b, t, hkv, dh = v.shape
        g = spec.n_heads // hkv
        pg = probs.reshape(b, hkv, g, t, -1)
        y = jnp.einsum("bkgts,bskd->btkgd", pg, v.astype(jnp.float32)).reshape(b, t, spec.n_heads, dh)
        if spec.attention == "kv_bias":
            vb = jnp.repeat(self.v_bias[...], g, axis=0)                              # [H, d]
            y = y + jnp.transpose(extra, (0, 2, 1))[..., None] * vb[None, None]
        return y

    def _gate(self, y, x, ctx):
        """Multiply the SDPA output by the gate of paper Table 7 (Qiu et al. G1 position)."""
        gate = self.spec.gate
        if gate == "none":
            return y
        if gate == "cond_channel":
            g = jnp.einsum("btd,dhk->bthk", x, self.gate_w[...].astype(x.dtype))
        elif gate in ("cond_head", "cond_single"):
            g = (x @ self.gate_w[...].astype(x.dtype))[..., None]
        elif gate == "static_token":
            g = (ctx["token_embedding"].astype(x.dtype) @ self.gate_w[...].astype(x.dtype))[..., None]
        elif gate == "static_position":
            g = self.gate_table[...][ctx["positions"]][None, :, :, None]
        elif gate == "uncond_channel":
            g = self.gate_theta[...][None, None]
        else:
            g = self.gate_theta[...][None, None, :, None] if gate == "uncond_head" else self.gate_theta[...]
        g = jax.nn.sigmoid(g.astype(jnp.float32))
        self.sow(AttnGate, "attn_gate", g)
        return (y.astype(jnp.float32) * g).astype(y.dtype)


class QKNorm(nnx.Module):
    """QK-norm: RMSNorm (learnable scale) over each head's d_head, or over all heads (scope 'full')."""

    def __init__(self, dim: int):
        self.scale = const_param(jnp.ones(dim), ("norm",))

    def __call__(self, x, spec: ModelSpec):
        if spec.qk_norm_scope == "head":
            return (rms_normalize(x, spec.norm_eps) * self.scale[...]).astype(x.dtype)
        b, t, h, d = x.shape
        flat = rms_normalize(x.reshape(b, t, h * d), spec.norm_eps) * self.scale[...]
        return flat.reshape(b, t, h, d).astype(x.dtype)
