"""The model's own forward with fake quantization at every linear layer (and the K/V projections' outputs).

`QuantConfig` says what is quantized: weights (per output channel or per tensor), the activation entering
every linear layer (per tensor / token / channel; dynamic or static), the K/V cache (per token and head, or
per tensor: the outputs of W_K and W_V, i.e. keys before RoPE as KVQuant stores them). The output head stays
in full precision unless `head=True` (Bondarenko et al.). A `keep` mask [B, T] keeps chosen tokens (BOS,
sinks, spike tokens) exact in activations and cache, and out of every scale.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsink.impact import intercept
from jaxsink.impact.quant import BITS, QuantError, QuantSpec, activation_axes, amax, fake_quant, fake_quant_weight

HEAD_PATHS = ("embed", "head")
KV_NAMES = ("wk", "wv")
CALIBRATION_MOMENTUM = 0.9          # running min-max over held-out batches (Bondarenko et al. 2023)


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    weights: QuantSpec | None = None
    acts: QuantSpec | None = None
    kv: QuantSpec | None = None
    head: bool = False

    def __post_init__(self):
        if self.kv is not None and (self.kv.granularity == "channel" or self.kv.static):
            raise QuantError("KV-cache quantization is dynamic, per token (and head) or per tensor")
        if self.weights is not None and (self.weights.granularity == "token" or self.weights.static):
            raise QuantError("weights are quantized per output channel or per tensor (their scales are exact)")

    @property
    def label(self) -> str:
        """W8A8-style name: bits of weights, activations, KV (16 = full precision)."""
        bits = lambda q: BITS[q.fmt] if q else 16  # noqa: E731
        name = f"W{bits(self.weights)}A{bits(self.acts)}"
        return name + (f"KV{bits(self.kv)}" if self.kv else "")


def plain_forward(graphdef):
    """fn(params, tokens) -> logits: the model's own layer-by-layer forward (nothing captured)."""
    def fn(params, tokens):
        return nnx.capture(nnx.merge(graphdef, nnx.State(params)))(tokens, None, False, False)
    return fn


def forward(graphdef, params, tokens, qc: QuantConfig, keep=None, scales=None):
    """(logits, per-site activation amax) of the fake-quantized model; `scales` (from `calibrate`) are the
    static activation scales, one per site."""
    def hook(site, x, w, dot):
        if site.path in HEAD_PATHS and not qc.head:
            return dot(x, w), jnp.zeros(())
        record = jnp.zeros(())
        if qc.acts is not None:
            axes = activation_axes(x.ndim, qc.acts.granularity, site.x_features)
            record = amax(x, axes, keep)
            static = scales[site.index] if qc.acts.static else None
            x = fake_quant(x, qc.acts, site.x_features, keep, static)
        if qc.weights is not None:
            w = fake_quant_weight(w, qc.weights, site.w_in)
        y = dot(x, w)
        if qc.kv is not None and site.name in KV_NAMES:
            y = fake_quant(y, qc.kv, (-1,), keep)
        return y, record
    return intercept.run(plain_forward(graphdef), params, tokens, hook=hook)


def calibrate(graphdef, params, batches, qc: QuantConfig, keeps=None) -> list:
    """Static activation scales: running max of each site's amax with momentum 0.9 over `batches`."""
    if qc.acts is None:
        return []
    dynamic = dataclasses.replace(qc, acts=dataclasses.replace(qc.acts, static=False), weights=None, kv=None)
    run = jax.jit(lambda p, t, k: forward(graphdef, p, t, dynamic, k)[1])
    running = None
    for i, tokens in enumerate(batches):
        rec = [np.asarray(r) for r in run(params, tokens, None if keeps is None else keeps[i])]
        running = rec if running is None else [CALIBRATION_MOMENTUM * a + (1 - CALIBRATION_MOMENTUM) * b
                                                for a, b in zip(running, rec)]
    if running is None:
        raise QuantError("static quantization needs at least one calibration batch")
    return [jnp.asarray(r) for r in running]


def nll(logits, tokens):
    """Mean next-token negative log-likelihood per sequence (positions 0..T-2 predict 1..T-1)."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0], axis=-1)


def sites(graphdef, params, tokens) -> list[intercept.Site]:
    """The linear layers in execution order (found by an abstract trace: no compute)."""
    found = []

    def hook(site, x, w, dot):
        found.append(site)
        return dot(x, w), None
    jax.eval_shape(lambda p, t: intercept.run(plain_forward(graphdef), p, t, hook=hook)[0], params, tokens)
    return found


def observe(graphdef, params, tokens, record):
    """[record(site, x, y) for every linear layer] of one unmodified forward (x: input, y: output)."""
    def hook(site, x, w, dot):
        y = dot(x, w)
        return y, record(site, x, y)
    return intercept.run(plain_forward(graphdef), params, tokens, hook=hook)[1]
