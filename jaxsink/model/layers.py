"""Small parts the blocks are composed from: parameters with logical axes, norms, positions, FFNs."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsink.model.capture import FFNGate
from jaxsink.model.cpu_paths import dense, dense_many, materialized
from jaxsink.model.spec import ModelSpec


def param(rngs: nnx.Rngs, shape, axes, std: float, dtype=jnp.float32) -> nnx.Param:
    """A normal(0, std) parameter tagged with logical axis names (mapped to the mesh by `sharding.py`)."""
    value = std * jax.random.normal(rngs.params(), shape, dtype) if std else jnp.zeros(shape, dtype)
    return nnx.Param(value, logical_axes=tuple(axes))


def const_param(value, axes) -> nnx.Param:
    return nnx.Param(jnp.asarray(value, jnp.float32), logical_axes=tuple(axes))


def rms_normalize(x, eps):
    """x / rms(x): the scale-free RMSNorm of paper Eq. 5 (sqrt(d) h / ||h|| up to eps), in float32."""
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)


class Norm(nnx.Module):
    """RMSNorm (learnable scale), LayerNorm (scale and bias) or DynamicTanh gamma*tanh(alpha x)+beta."""

    def __init__(self, kind: str, dim: int, eps: float, alpha_init: float = 0.5):
        self.kind, self.eps = kind, eps
        self.scale = const_param(jnp.ones(dim), ("norm",))
        if kind in ("layernorm", "dyt"):
            self.bias = const_param(jnp.zeros(dim), ("norm",))
        if kind == "dyt":
            self.alpha = const_param(alpha_init, ())

    def __call__(self, x):
        dtype = x.dtype
        if self.kind == "rmsnorm":
            y = rms_normalize(x, self.eps) * self.scale[...]
        elif self.kind == "layernorm":
            x32 = x.astype(jnp.float32)
            centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
            y = rms_normalize(centred, self.eps) * self.scale[...] + self.bias[...]
        else:
            y = self.scale[...] * jnp.tanh(self.alpha[...] * x.astype(jnp.float32)) + self.bias[...]
        return y.astype(dtype)


# ---------------------------------------------------------------- positions

def rope(x, positions, theta: float, scaling: tuple = ()):
    """Rotary embedding, rotate-half convention (HF Llama): x [B, T, heads, d], positions [T].
    `scaling` = (factor, low_freq_factor, high_freq_factor, original_max_pos) applies Llama-3 scaling."""
    d = x.shape[-1]
    inv_freq = theta ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
    if scaling:
        inv_freq = llama3_inv_freq(inv_freq, *scaling)
    angle = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]            # [T, d/2]
    cos, sin = materialized((jnp.cos(angle)[None, :, None, :], jnp.sin(angle)[None, :, None, :]))
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., : d // 2], x32[..., d // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def llama3_inv_freq(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_pos):
    """Llama-3.1 RoPE frequencies (HF `_compute_llama3_parameters`): wavelengths longer than
    original_max_pos / low_freq_factor slow down by `factor`, shorter than original_max_pos /
    high_freq_factor stay, and the band between blends the two smoothly."""
    wavelen = 2 * math.pi / inv_freq
    slowed = jnp.where(wavelen > original_max_pos / low_freq_factor, inv_freq / factor, inv_freq)
    smooth = (original_max_pos / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * slowed / factor + smooth * slowed
    medium = (wavelen >= original_max_pos / high_freq_factor) & (wavelen <= original_max_pos / low_freq_factor)
    return jnp.where(medium, blended, slowed)


def alibi_slopes(n_heads: int):
    """ALiBi slopes m_h = 2^(-8 (h+1) / H) (Press et al. 2022, geometric for any H)."""
    return 2.0 ** (-8.0 * (jnp.arange(n_heads, dtype=jnp.float32) + 1) / n_heads)


# ---------------------------------------------------------------- feed-forward mixers

def out_std(spec: ModelSpec) -> float:
    """GPT-2 style: output projections get std / sqrt(2L) so the residual variance stays O(1) in depth."""
    return spec.init_std / math.sqrt(2 * spec.n_layers)


class SwiGLU(nnx.Module):
    """F(h~) = W_down (SiLU(W_gate h~) * W_up h~) (paper Eq. 12)."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs):
        d, f = spec.d_model, spec.d_ff
        self.w_gate = param(rngs, (d, f), ("embed", "mlp"), spec.init_std)
        self.w_up = param(rngs, (d, f), ("embed", "mlp"), spec.init_std)
        self.w_down = param(rngs, (f, d), ("mlp", "embed"), out_std(spec))

    def __call__(self, x, ctx):
        dt = x.dtype
        z, up = dense_many(x, [self.w_gate[...].astype(dt), self.w_up[...].astype(dt)])
        self.sow(FFNGate, "ffn_gate", z)
        return dense(jax.nn.silu(z) * up, self.w_down[...].astype(dt))


class GeluMLP(nnx.Module):
    """The two-layer GeLU FFN of Vaswani et al. (paper Table 4)."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs):
        d, f = spec.d_model, spec.d_ff
        self.w_in = param(rngs, (d, f), ("embed", "mlp"), spec.init_std)
        self.w_out = param(rngs, (f, d), ("mlp", "embed"), out_std(spec))

    def __call__(self, x, ctx):
        dt = x.dtype
        return dense(jax.nn.gelu(dense(x, self.w_in[...].astype(dt)), approximate=True), self.w_out[...].astype(dt))


class ReluMLP(GeluMLP):
    """The two-layer ReLU FFN of Guo et al. 2024's Bigram-Backcopy model (`BBM/model.py`, FeedForward)."""

    def __call__(self, x, ctx):
        dt = x.dtype
        return jax.nn.relu(x @ self.w_in[...].astype(dt)) @ self.w_out[...].astype(dt)


class LinearFFN(nnx.Module):
    """A single d_model x d_model linear layer in place of the FFN (paper Table 4)."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs):
        self.w = param(rngs, (spec.d_model, spec.d_model), ("embed", "mlp"), out_std(spec))

    def __call__(self, x, ctx):
        return dense(x, self.w[...].astype(x.dtype))
