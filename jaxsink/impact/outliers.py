"""Outlier statistics of one activation [B, T, ...features] (a linear layer's input), each variant named.

- Bondarenko et al. 2023: max ||x||_inf per sequence and kurtosis per sequence over the flattened T*d values,
  mean((x - mu)^4) / sigma^4 (not excess), both averaged over sequences.
- OSP (arXiv 2506.19697): per token over the features, relu(mean(x^4) / std(x)^4 - 3), averaged over tokens.
- PrefixQuant: per token m_t = max_k |x_tk|; an outlier token has m_t / median_t(m) > eta (64 at down_proj).
- SQNR of each quantizer (quant.sqnr_db), the direct measure of what quantization loses.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsink.impact.quant import QuantSpec, fake_quant, sqnr_db

PREFIXQUANT_ETA = 64.0


def _tokens(x):
    """[B, T, F] float32 view (features flattened)."""
    return x.astype(jnp.float32).reshape(x.shape[0], x.shape[1], -1)


def kurtosis_bondarenko(x):
    """Per-sequence kurtosis over all T*F values (not excess), averaged over the batch."""
    v = _tokens(x).reshape(x.shape[0], -1)
    c = v - v.mean(-1, keepdims=True)
    return jnp.mean(jnp.mean(c ** 4, -1) / jnp.mean(c ** 2, -1) ** 2)


def kurtosis_osp(x):
    """OSP's per-token excess kurtosis relu(mean(x^4) / std(x)^4 - 3) over the features, averaged."""
    v = _tokens(x)
    return jnp.mean(jax.nn.relu(jnp.mean(v ** 4, -1) / jnp.std(v, -1) ** 4 - 3.0))


def max_abs(x):
    """Bondarenko's max ||x||_inf per sequence, averaged over the batch."""
    return jnp.mean(jnp.max(jnp.abs(_tokens(x)), axis=(1, 2)))


def token_max(x):
    """m_t = max_k |x_tk|, [B, T]."""
    return jnp.max(jnp.abs(_tokens(x)), -1)


def outlier_tokens(x, eta: float = PREFIXQUANT_ETA):
    """PrefixQuant's outlier tokens [B, T]: m_t / median over the sequence's tokens > eta."""
    m = token_max(x)
    return m > eta * jnp.median(m, axis=-1, keepdims=True)


def outlier_token_share(x, eta: float = PREFIXQUANT_ETA):
    return jnp.mean(outlier_tokens(x, eta).astype(jnp.float32))


def layer_stats(x, feature_axes, quantizers: dict[str, QuantSpec], keep=None) -> dict:
    """Every statistic above for one layer input, plus the SQNR (dB) under each dynamic quantizer (and,
    with a `keep` mask, with those tokens kept exact)."""
    out = {"kurtosis_bondarenko": kurtosis_bondarenko(x), "kurtosis_osp": kurtosis_osp(x),
           "max_abs": max_abs(x), "outlier_token_share": outlier_token_share(x)}
    out["sqnr"] = {name: sqnr_db(x, fake_quant(x, q, feature_axes)) for name, q in quantizers.items()}
    if keep is not None:
        out["sqnr_keep"] = {name: sqnr_db(x, fake_quant(x, q, feature_axes, keep)) for name, q in quantizers.items()}
    return out
