"""AdamW with linear warmup + cosine decay to a min-LR ratio, clipping and a weight-decay mask (paper Table 9)."""
from __future__ import annotations

import jax
import optax

from jaxsink.model.cpu_paths import materialized

# parameter names that are not matrices of a linear map (never decayed unless asked)
NORM_NAMES = ("scale", "bias", "alpha")
BIAS_NAMES = ("bq", "bk", "bv", "k_bias", "v_bias", "sink_logit", "gate_theta", "gate_table")
EMBED_NAMES = ("embed", "pos_embed")


def schedule(t) -> optax.Schedule:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `steps`."""
    warmup = min(t.warmup_steps, t.steps)
    sched = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else t.lr, peak_value=t.lr, warmup_steps=warmup,
        decay_steps=max(t.steps, warmup + 1), end_value=t.lr * t.min_lr_ratio)
    # the scalar computed once per step: XLA CPU otherwise fuses the cosine into every parameter's update and
    # evaluates it per element (600k sincosf per tiny step; `jaxsink.model.cpu_paths.materialized`)
    return lambda count: materialized(sched(count))


def decay_mask(params: dict, t) -> dict:
    """True where weight decay applies, by the parameter's own name (last path element)."""
    def decide(path, _):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in NORM_NAMES:
            return t.decay_norms
        if name in BIAS_NAMES:
            return t.decay_biases
        if name in EMBED_NAMES:
            return t.decay_embeddings
        return True
    return jax.tree_util.tree_map_with_path(decide, params)


def make_optimizer(t, params: dict) -> optax.GradientTransformation:
    parts = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip else []
    parts.append(optax.adamw(schedule(t), b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay,
                             mask=decay_mask(params, t)))
    return optax.chain(*parts)
