"""Fake quantization (simulated integer / fp8 arithmetic in float32) as pure, jit-able functions.

Symmetric int-b: s = amax / (2^(b-1) - 1), Q(x) = clip(round(x / s), -qmax, qmax) * s. FP8 (E4M3 max 448,
E5M2 max 57344): x / s cast to the `jnp.float8_*` dtype and back, s = amax / fmax. The granularity of amax is
the set of axes it is reduced over: everything (per tensor), the feature axes (per token), the token axes
(per channel). Rows flagged `exclude` (kept tokens) do not enter amax, so an outlier token kept in full
precision no longer sets the scale of the others (IntactKV, PrefixQuant, KVSink).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

INT_BITS = {"int8": 8, "int4": 4}
FP8 = {"fp8_e4m3": (jnp.float8_e4m3fn, 448.0), "fp8_e5m2": (jnp.float8_e5m2, 57344.0)}
FORMATS = (*INT_BITS, *FP8)
GRANULARITIES = ("tensor", "token", "channel")
BITS = {"int8": 8, "int4": 4, "fp8_e4m3": 8, "fp8_e5m2": 8}


class QuantError(ValueError):
    """An impossible quantizer (unknown format or granularity, static per-token scales)."""


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """One quantizer: number format, granularity of the scale, and static (calibrated) or dynamic scales."""
    fmt: str = "int8"
    granularity: str = "tensor"
    static: bool = False

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise QuantError(f"unknown quantization format {self.fmt!r}; choose from {FORMATS}")
        if self.granularity not in GRANULARITIES:
            raise QuantError(f"unknown granularity {self.granularity!r}; choose from {GRANULARITIES}")
        if self.static and self.granularity == "token":
            raise QuantError("static per-token scales are impossible (tokens differ between batches)")

    @property
    def label(self) -> str:
        return f"{self.fmt}/{self.granularity}{'/static' if self.static else ''}"


def qmax(fmt: str) -> float:
    """The largest representable magnitude: 2^(b-1) - 1 for int-b, the format maximum for fp8."""
    return float(2 ** (INT_BITS[fmt] - 1) - 1) if fmt in INT_BITS else FP8[fmt][1]


def quantize(x, fmt: str, amax):
    """Q(x) with the scale s = amax / qmax(fmt) (amax broadcastable to x; amax = 0 leaves zeros)."""
    x32 = x.astype(jnp.float32)
    top = qmax(fmt)
    amax = jnp.asarray(amax, jnp.float32)
    s = jnp.where(amax > 0, amax / top, 1.0)
    y = jnp.clip(x32 / s, -top, top)
    if fmt in INT_BITS:
        y = jnp.round(y)
    else:
        y = y.astype(FP8[fmt][0]).astype(jnp.float32)
    return (y * s).astype(x.dtype)


def amax(x, axes, exclude=None):
    """max |x| over `axes` (None: all), keepdims; rows where the [B, T] mask `exclude` is True are skipped."""
    a = jnp.abs(x.astype(jnp.float32))
    if exclude is not None:
        a = jnp.where(_rows(exclude, x.ndim), 0.0, a)
    return jnp.max(a, axis=axes, keepdims=True)


def _rows(mask, ndim: int):
    """A [B, T] token mask broadcast against an activation [B, T, ...]."""
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def activation_axes(ndim: int, granularity: str, feature_axes: tuple[int, ...]):
    """Axes amax is reduced over for an activation [B, T, ...] whose `feature_axes` are contracted."""
    if granularity == "tensor":
        return None
    if granularity == "token":
        return tuple(feature_axes)
    return tuple(a for a in range(ndim) if a not in feature_axes)


def fake_quant(x, spec: QuantSpec, feature_axes=(-1,), keep=None, scale=None):
    """Quantize an activation [B, T, ...]: dynamic amax at `spec.granularity` (or a calibrated `scale`);
    tokens where `keep` [B, T] is True pass through exactly and do not enter amax."""
    feature_axes = tuple(a % x.ndim for a in feature_axes)
    a = scale if scale is not None else amax(x, activation_axes(x.ndim, spec.granularity, feature_axes), keep)
    q = quantize(x, spec.fmt, a)
    return q if keep is None else jnp.where(_rows(keep, x.ndim), x, q)


def keep_channels(x, q, channels):
    """Put chosen feature channels (last axis) of `x` back into its quantized version `q`."""
    mask = jnp.zeros(x.shape[-1], bool).at[jnp.asarray(channels, jnp.int32)].set(True)
    return jnp.where(mask, x, q)


def fake_quant_weight(w, spec: QuantSpec, in_axes: tuple[int, ...]):
    """Quantize a weight whose `in_axes` are contracted: per channel = one scale per output channel
    (amax over the input axes, the common default); per tensor = one scale."""
    if spec.granularity == "token":
        raise QuantError("weights have no tokens: use granularity 'channel' (per output channel) or 'tensor'")
    axes = None if spec.granularity == "tensor" else tuple(a % w.ndim for a in in_axes)
    return quantize(w, spec.fmt, amax(w, axes))


def sqnr_db(x, q):
    """Signal-to-quantization-noise ratio 10 log10(sum x^2 / sum (x - Q(x))^2) in dB (inf if exact)."""
    x32, q32 = x.astype(jnp.float32), q.astype(jnp.float32)
    return 10.0 * jnp.log10(jnp.sum(x32 ** 2) / jnp.sum((x32 - q32) ** 2))
