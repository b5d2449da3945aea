"""Pruning and super weights.

- Magnitude (score |W_ij|) and Wanda (Sun et al. 2024: S_ij = |W_ij| * ||X_j||_2, the input feature's norm
  over the calibration tokens), at 50% unstructured or N:M (2:4: in every group of 4 consecutive inputs of an
  output, the 2 lowest scores go). Wanda compares scores per output; magnitude over the whole matrix.
- Super weights (Yu et al. 2024, arXiv 2411.07191): one weight of an early down-projection whose removal
  wrecks the model; found from one forward at the spike coordinates: the down-projection whose output
  carries the largest activation (the step-up block), its input channel of largest |activation| and its
  output channel of largest |activation|.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxsink.impact import qmodel

METHODS = ("magnitude", "wanda")
PATTERNS = ("unstructured", "2:4", "4:8")


class PruneError(ValueError):
    """An unknown pruning method or pattern, or a layer whose layout is not (inputs..., outputs...)."""


def as_matrix(w, n_in: int):
    """[inputs, outputs] view of a weight laid out (input axes..., output axes...)."""
    return w.reshape(int(np.prod(w.shape[:n_in])), -1)


def prune_mask(scores, sparsity: float = 0.5, pattern: str = "unstructured", per_output: bool = True):
    """Boolean keep-mask of a [inputs, outputs] score matrix."""
    if pattern not in PATTERNS:
        raise PruneError(f"unknown sparsity pattern {pattern!r}; choose from {PATTERNS}")
    n_in, n_out = scores.shape
    if pattern != "unstructured":
        n, m = (int(v) for v in pattern.split(":"))
        if n_in % m:
            raise PruneError(f"{pattern} needs the input size ({n_in}) to be a multiple of {m}")
        groups = scores.reshape(n_in // m, m, n_out)
        rank = jnp.argsort(jnp.argsort(groups, axis=1), axis=1)             # 0 = smallest in its group
        return (rank >= n).reshape(n_in, n_out)
    k = int(round(sparsity * (n_in if per_output else n_in * n_out)))
    flat = scores if per_output else scores.reshape(-1, 1)
    rank = jnp.argsort(jnp.argsort(flat, axis=0), axis=0)
    return (rank >= k).reshape(n_in, n_out)


def input_norms(graphdef, params, batches) -> dict[str, np.ndarray]:
    """||X_j||_2 over all calibration tokens for every linear layer's input feature, by parameter path."""
    record = lambda site, x, y: jnp.sum(jnp.square(x.astype(jnp.float32)),  # noqa: E731
                                        axis=tuple(a for a in range(x.ndim) if a not in site.x_features))
    run = jax.jit(lambda p, t: qmodel.observe(graphdef, p, t, record))
    total = None
    for tokens in batches:
        rec = [np.asarray(r, np.float64) for r in run(params, tokens)]
        total = rec if total is None else [a + b for a, b in zip(total, rec)]
    found = qmodel.sites(graphdef, params, batches[0])
    return {s.path: np.sqrt(total[s.index]) for s in found}


def _layers(graphdef, params, tokens):
    """(site, parameter) of every prunable linear layer (the head and embedding excluded)."""
    out = []
    for site in qmodel.sites(graphdef, params, tokens):
        if site.path in qmodel.HEAD_PATHS:
            continue
        if not site.direct or site.w_in != tuple(range(len(site.w_in))):
            raise PruneError(f"{site.path}: weight layout is not (inputs..., outputs...)")
        out.append(site)
    return out


def prune(graphdef, params, batches, method: str = "wanda", sparsity: float = 0.5, pattern: str = "unstructured"):
    """A copy of `params` with every block linear layer pruned (Wanda's norms from `batches`)."""
    if method not in METHODS:
        raise PruneError(f"unknown pruning method {method!r}; choose from {METHODS}")
    norms = input_norms(graphdef, params, batches) if method == "wanda" else {}
    flat = dict(_flat_items(params))
    for site in _layers(graphdef, params, batches[0]):
        w = flat[site.path]
        n_in = len(site.w_in)
        scores = jnp.abs(as_matrix(w, n_in))
        if method == "wanda":
            scores = scores * jnp.asarray(norms[site.path].reshape(-1, 1), jnp.float32)
        mask = prune_mask(scores, sparsity, pattern, per_output=method == "wanda")
        flat[site.path] = jnp.where(mask.reshape(w.shape), w, 0).astype(w.dtype)
    return _unflatten(params, flat)


def _flat_items(params):
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        yield "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), leaf


def _unflatten(params, flat):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return jax.tree_util.tree_unflatten(treedef, [flat[p] for p, _ in _flat_items(params)])


def set_weight(params, path: str, index: tuple, value: float):
    """A copy of `params` with one entry of the parameter at `path` set to `value` (an ablation)."""
    flat = dict(_flat_items(params))
    flat[path] = flat[path].at[index].set(value)
    return _unflatten(params, flat)


@dataclasses.dataclass
class SuperWeight:
    """The candidate super weight W_down[in_channel, out_channel] of paper block `block`."""
    block: int
    path: str
    in_channel: int
    out_channel: int
    value: float
    input_max: float           # max |activation| of the spiking input channel
    output_max: float          # max |output| of the down-projection on the spike channel
    abs_rank: int              # rank of |value| among the layer's |weights| (0 = largest)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def find_super_weight(graphdef, params, tokens, name: str = "w_down") -> SuperWeight:
    """The down-projection with the largest output activation (the step-up block) and its spike coordinates."""
    def record(site, x, y):
        return (jnp.max(jnp.abs(x.astype(jnp.float32)), axis=(0, 1)), jnp.max(jnp.abs(y.astype(jnp.float32)), axis=(0, 1)))
    rec = jax.jit(lambda p, t: qmodel.observe(graphdef, p, t, record))(params, tokens)
    downs = [s for s in qmodel.sites(graphdef, params, tokens) if s.name == name]
    if not downs:
        raise PruneError(f"the model has no {name!r} layers (a super weight lives in a SwiGLU down-projection)")
    site = max(downs, key=lambda s: float(rec[s.index][1].max()))
    x_max, y_max = np.asarray(rec[site.index][0]), np.asarray(rec[site.index][1])
    i, o = int(x_max.argmax()), int(y_max.argmax())
    w = np.asarray(dict(_flat_items(params))[site.path])
    rank = int(np.sum(np.abs(w) > abs(w[i, o])))
    return SuperWeight(site.block, site.path, i, o, float(w[i, o]), float(x_max[i]), float(y_max[o]), rank)
