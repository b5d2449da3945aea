"""Route every linear layer of a forward pass through a hook, without touching the model code.

The forward is traced to a jaxpr; an interpreter re-runs it equation by equation and every `dot_general`
with one operand read straight from a parameter (a linear layer: W_Q/K/V/O, gate/up/down, head) calls
`hook(site, x, w, dot)` instead, where `dot(x, w)` is the original product. The hook may quantize the
activation (the layer's input, Bondarenko et al.'s placement), the weight, or the output (K/V for a cache),
and returns (y, record). Sites are numbered in execution order, which is fixed for a given model, so
records from calibration batches line up with the scales of the next call. Works inside `jax.jit`.
"""
from __future__ import annotations

import dataclasses

import jax
from jax.extend import core

from jaxsink.model import cpu_paths

PASS_THROUGH = ("convert_element_type", "transpose", "reshape", "copy")   # a weight stays a weight


@dataclasses.dataclass(frozen=True)
class Site:
    """One linear layer as the forward meets it."""
    index: int                       # execution order
    path: str                        # parameter path, e.g. "blocks/2/mixer/w_down"
    x_features: tuple[int, ...]      # contracted axes of the activation (its input features)
    w_in: tuple[int, ...]            # contracted axes of the weight operand
    direct: bool                     # the weight operand is the parameter itself (no transpose/reshape)
    first_with_input: int            # index of the first site reading the same activation (Q, K, V share)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def block(self) -> int | None:
        """The paper's 1-based block number, None outside the blocks (the head)."""
        parts = self.path.split("/")
        return int(parts[1]) + 1 if parts[0] == "blocks" else None


def param_paths(params) -> list[str]:
    return ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def run(fn, params, *args, hook):
    """`fn(params, *args)` with every linear layer routed through `hook`; returns (output, [records])."""
    with cpu_paths.accelerator_paths():     # the weights as stored, one dot_general per linear layer
        closed = jax.make_jaxpr(fn)(params, *args)
    leaves = jax.tree.leaves(params)
    tags = {v: (p, True) for v, p in zip(closed.jaxpr.invars, param_paths(params))}
    state = _State(hook)
    out = _eval(closed.jaxpr, closed.consts, [*leaves, *jax.tree.leaves(args)], tags, state)
    return jax.tree.unflatten(jax.tree.structure(jax.eval_shape(fn, params, *args)), out), state.records


class _State:
    def __init__(self, hook):
        self.hook, self.records, self.inputs = hook, [], {}


def _eval(jaxpr, consts, args, tags, state):
    env = {}

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        in_tags = [tags.get(v) if not isinstance(v, core.Literal) else None for v in eqn.invars]
        outs, out_tags = _apply(eqn, vals, in_tags, state)
        for v, x, t in zip(eqn.outvars, outs, out_tags):
            env[v] = x
            if t is not None:
                tags[v] = t
    return [read(v) for v in jaxpr.outvars]


def _apply(eqn, vals, in_tags, state):
    name = eqn.primitive.name
    if name == "dot_general" and (in_tags[0] is None) != (in_tags[1] is None):
        return [_linear(eqn, vals, in_tags, state)], [None]
    if name in ("jit", "pjit") and any(in_tags):
        inner = eqn.params["jaxpr"]
        sub_tags = {v: t for v, t in zip(inner.jaxpr.invars, in_tags) if t is not None}
        outs = _eval(inner.jaxpr, inner.consts, vals, sub_tags, state)
        return outs, [sub_tags.get(v) for v in inner.jaxpr.outvars]
    with eqn.ctx.manager:
        outs = eqn.primitive.bind(*vals, **eqn.primitive.get_bind_params(eqn.params))
    outs = outs if eqn.primitive.multiple_results else [outs]
    passed = (in_tags[0][0], False) if name in PASS_THROUGH and in_tags and in_tags[0] else None
    return outs, [passed] * len(outs)


def _linear(eqn, vals, in_tags, state):
    (lc, rc), batch = eqn.params["dimension_numbers"]
    w_side = 0 if in_tags[0] is not None else 1
    if batch[0]:
        raise NotImplementedError("a batched dot_general with a parameter operand is not a linear layer")
    x, w = (vals[1], vals[0]) if w_side == 0 else (vals[0], vals[1])
    x_features, w_in = (tuple(rc), tuple(lc)) if w_side == 0 else (tuple(lc), tuple(rc))
    path, direct = in_tags[w_side]
    x_var = eqn.invars[1 - w_side]
    index = len(state.records)
    site = Site(index, path, x_features, w_in, direct, state.inputs.setdefault(x_var, index))

    def dot(x_, w_):
        pair = (w_, x_) if w_side == 0 else (x_, w_)
        return eqn.primitive.bind(*pair, **eqn.params)

    y, record = state.hook(site, x, w, dot)
    state.records.append(record)
    return y
