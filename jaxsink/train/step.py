"""The jitted training and evaluation steps: pure functions of (state, batch).

state = {"params": nested dict, "opt_state": optax state, "step": int32}. A batch is
{"inputs", "targets"} of shape [grad_accum, micro_batch, T]; micro-batches run under `lax.scan` and their
gradients are summed, so the update equals one step on the whole batch (loss = sum of token NLL / count).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxsink.model import apply, apply_hidden
from jaxsink.train.loss import chunked_nll, token_nll_from_logits as token_nll  # noqa: F401  (re-exported)


def position_weights(seq_len: int, start: int, end: int):
    """1 on loss positions [start, end) (paper Table 8 trains on a range of positions only), else 0."""
    pos = jnp.arange(seq_len)
    return ((pos >= start) & (pos < (end or seq_len))).astype(jnp.float32)


def make_train_step(graphdef, optimizer, t, *, capture=(), stats_fn=None, stats_rows: int = 0,
                    stats_positions: int = 0):
    """Build step(state, batch) -> (state, metrics).

    The gradient is always the plain one (fused attention, scan, remat; chunked loss). With `stats_fn`, a
    separate forward-only pass over the first `stats_rows` sequences (0: all) of the first micro-batch,
    cut to their first `stats_positions` positions (0: all), captures `capture` for
    `stats_fn(intermediates)`: under causal attention those positions' activations and attention are
    exactly the full sequence's, and the update is bit for bit the plain step's."""
    weights = position_weights(t.seq_len, t.loss_start, t.loss_end)

    def loss_fn(params, inputs, targets):
        h, head = apply_hidden(graphdef, params, inputs)
        w = jnp.broadcast_to(weights, targets.shape)
        return jnp.sum(chunked_nll(h, head, targets) * w), (jnp.sum(w), None)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, batch):
        params = state["params"]

        def micro(carry, xs):
            g_sum, l_sum, n_sum = carry
            (l, (n, _)), g = grad_fn(params, xs["inputs"], xs["targets"])
            return (jax.tree.map(jnp.add, g_sum, g), l_sum + l, n_sum + n), None

        first = jax.tree.map(lambda x: x[0], batch)
        (l0, (n0, _)), g0 = grad_fn(params, first["inputs"], first["targets"])
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
            rows = first["inputs"][:stats_rows or None, :stats_positions or None]
            captured = apply(graphdef, jax.lax.stop_gradient(params), rows, capture)[1]
            metrics.update(stats_fn(captured, inputs=rows))
        return new_state, metrics

    return step


def make_eval_step(graphdef, positions=None):
    """eval_step(params, inputs, targets, mask) -> (sum of NLL over unmasked rows, token count). `positions`
    [T] weights the positions (the loss range of Table 8 rows: a model is evaluated where it was trained)."""
    def eval_step(params, inputs, targets, mask):
        h, head = apply_hidden(graphdef, params, inputs)
        w = jnp.broadcast_to(mask[:, None].astype(jnp.float32), targets.shape)
        if positions is not None:
            w = w * positions[None]
        return jnp.sum(chunked_nll(h, head, targets) * w), jnp.sum(w)
    return eval_step
