"""The jitted training and evaluation steps: pure functions of (state, batch).

state = {"params": nested dict, "opt_state": optax state, "step": int32}. A batch is
{"inputs", "targets"} of shape [grad_accum, micro_batch, T]; micro-batches run under `lax.scan` and their
gradients are summed, so the update equals one step on the whole batch (loss = sum of token NLL / count).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxsink.model import apply


def position_weights(seq_len: int, start: int, end: int):
    """1 on loss positions [start, end) (paper Table 8 trains on a range of positions only), else 0."""
    pos = jnp.arange(seq_len)
    return ((pos >= start) & (pos < (end or seq_len))).astype(jnp.float32)


def token_nll(logits, targets):
    """Per-token negative log-likelihood in float32, [B, T]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def make_train_step(graphdef, optimizer, t, *, capture=(), stats_fn=None):
    """Build step(state, batch) -> (state, metrics). With `stats_fn`, the first micro-batch's captured
    intermediates go through `stats_fn(collected_intermediates)` inside the same jitted step."""
    weights = position_weights(t.seq_len, t.loss_start, t.loss_end)

    def loss_fn(params, inputs, targets):
        logits, inter = apply(graphdef, params, inputs, capture)
        w = jnp.broadcast_to(weights, targets.shape)
        return jnp.sum(token_nll(logits, targets) * w), (jnp.sum(w), inter)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, batch):
        params = state["params"]

        def micro(carry, xs):
            g_sum, l_sum, n_sum = carry
            (l, (n, _)), g = grad_fn(params, xs["inputs"], xs["targets"])
            return (jax.tree.map(jnp.add, g_sum, g), l_sum + l, n_sum + n), None

        first = jax.tree.map(lambda x: x[0], batch)
        (l0, (n0, inter)), g0 = grad_fn(params, first["inputs"], first["targets"])
        rest = jax.tree.map(lambda x: x[1:], batch)
        (g_sum, l_sum, n_sum), _ = jax.lax.scan(micro, (g0, l0, n0), rest) if t.grad_accum > 1 \
            else ((g0, l0, n0), None)
        grads = jax.tree.map(lambda g: g / n_sum, g_sum)
        loss = l_sum / n_sum
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731  a non-finite step changes nothing
        new_state = {"params": jax.tree.map(keep, new_params, params),
                     "opt_state": jax.tree.map(keep, opt_state, state["opt_state"]),
                     "step": state["step"] + 1}
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite}
        if stats_fn is not None:
            metrics.update(stats_fn(inter))
        return new_state, metrics

    return step


def make_eval_step(graphdef, positions=None):
    """eval_step(params, inputs, targets, mask) -> (sum of NLL over unmasked rows, token count). `positions`
    [T] weights the positions (the loss range of Table 8 rows: a model is evaluated where it was trained)."""
    def eval_step(params, inputs, targets, mask):
        logits, _ = apply(graphdef, params, inputs)
        w = jnp.broadcast_to(mask[:, None].astype(jnp.float32), targets.shape)
        if positions is not None:
            w = w * positions[None]
        return jnp.sum(token_nll(logits, targets) * w), jnp.sum(w)
    return eval_step
