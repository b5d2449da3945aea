"""Massive activations ("spikes"): magnitudes, spike masks, the life cycle, and the sparse, near-constant
vectors RMSNorm makes of spike tokens (paper §3.1 and §3.2.1; Sun et al. 2024).

Everything that returns arrays is a pure function of captured hidden states, wrapped in `probe_jit`: traced
inside a caller's jit, NumPy when called from the host (compiled once per shape). The few helpers that
return Python lists (`mask_indices`, `block_indices`, `life_cycle_blocks`) are for the host only.
Shapes: a hidden state is h [..., T, D] with one sequence per leading index, e.g. [B, T, D] for one block
or [n_blocks, B, T, D] stacked. Blocks use the paper's indexing: 1-based, odd = attention, even = FFN.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


def probe_jit(fn=None, *, static: tuple[str, ...] = ()):
    """jax.jit for the statistics. Under a caller's jit (or any transformation) results stay traced, so the
    functions compose inside training steps; called from the host they come back as NumPy
    (`jax.device_get`), ready for JSON and plots. `static`: argument names that are static for jit."""
    if fn is None:
        return functools.partial(probe_jit, static=static)
    jitted = jax.jit(fn, static_argnames=static)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return host_unless_traced(jitted(*args, **kwargs))

    return call


def host_unless_traced(tree):
    """NumPy copies of a result tree, unless it is being traced (then unchanged)."""
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))
    return tree if traced else jax.device_get(tree)


# ------------------------------------------------------------------ magnitudes (Sun et al. protocol, Fig. 1)

def _abs32(h):
    return jnp.abs(jnp.asarray(h).astype(jnp.float32))


def _sequence_median(a):
    """Median of |h| over all tokens and channels of each sequence: [..., T, D] -> [..., 1, 1]."""
    return nonnegative_median(a.reshape(*a.shape[:-2], -1))[..., None, None]


def nonnegative_median(a):
    """Exact median over the last axis of a >= 0 (float32), as `jnp.median` computes it, without a sort.

    XLA's CPU sort made `jnp.median` cost more than the probed model's forward pass. For x >= 0 the int32 bit
    pattern of a float32 is monotone in x, so the k-th smallest value is found by bisection over bit patterns,
    31 counting passes; the upper middle element (even n) is the smallest value above the lower one, or the
    lower one itself when it repeats. NaN anywhere gives NaN, like `jnp.median`.
    """
    a = a.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(a, jnp.int32)
    n = a.shape[-1]
    k = (n - 1) // 2

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        left = jnp.sum(bits <= mid[..., None], axis=-1) > k
        return jnp.where(left, lo, mid + 1), jnp.where(left, mid, hi)

    lo = jnp.zeros(a.shape[:-1], jnp.int32)
    hi = jnp.full(a.shape[:-1], 0x7F800000, jnp.int32)           # +inf
    lower_bits = jax.lax.fori_loop(0, 31, halve, (lo, hi))[0]
    lower = jax.lax.bitcast_convert_type(lower_bits, jnp.float32)
    if n % 2:
        median = lower
    else:
        repeats = jnp.sum(bits <= lower_bits[..., None], axis=-1) > k + 1
        above = jnp.min(jnp.where(bits > lower_bits[..., None], a, jnp.inf), axis=-1)
        median = (lower + jnp.where(repeats, lower, above)) / 2
    return jnp.where(jnp.isnan(a).any(-1), jnp.nan, median)


@probe_jit
def magnitude_stats(h) -> dict:
    """Per sequence, over all its tokens and channels (Sun et al.'s `--exp2`, paper §3.1.1): the top-3 |h|,
    the median |h|, top-1 / median, and the (position, channel) of the largest |h|.

    h [..., T, D] -> top3 [..., 3]; median, top1_over_median, argmax_position, argmax_channel [...].
    """
    a = _abs32(h)
    d = a.shape[-1]
    flat = a.reshape(*a.shape[:-2], -1)
    # top_k only for the values, max / argmax for the rest: reusing top_k's outputs made XLA on CPU lower
    # it to a full sort (10x slower; benchmarks/probe_vs_hooks.py)
    top3, top1, idx = jax.lax.top_k(flat, 3)[0], jnp.max(flat, axis=-1), jnp.argmax(flat, axis=-1)
    median = _sequence_median(a)[..., 0, 0]
    return {"top3": top3, "median": median, "top1_over_median": top1 / median,
            "argmax_position": idx // d, "argmax_channel": idx % d}


@probe_jit
def spike_top1(residual_top1):
    """The tables' "Spike" (undefined in the paper, notes §2.11): per sequence the top-1 |h| over all
    blocks of the residual stream (blocks 1..2L; the embedding is excluded), then the mean over sequences.
    residual_top1 [n_blocks, B] (e.g. `magnitude_stats(h)["top3"][..., 0]` stacked) -> scalar."""
    return jnp.mean(jnp.max(jnp.asarray(residual_top1, jnp.float32), axis=0))


# ------------------------------------------------------------------ spike tokens and channels

@dataclasses.dataclass(frozen=True)
class SpikeCriterion:
    """An entry h[t, c] is massive when |h| > abs_threshold AND |h| > rel_factor x the median |h| of that
    sequence's hidden state at that block (Sun et al. 2024: 100 and 1000; both strict).

    Models with d_model of a few hundred rarely reach |h| > 100 (notes §7), so `relative()` drops the
    absolute threshold and asks for a smaller ratio. Choice: 20x the median; a Gaussian hidden state has
    top-1 / median of only ~6 at T x D = 64 x 128, so 20x flags only real outliers.
    """
    abs_threshold: float = 100.0
    rel_factor: float = 1000.0

    @classmethod
    def relative(cls, rel_factor: float = 20.0) -> "SpikeCriterion":
        return cls(0.0, rel_factor)


@probe_jit(static=("criterion",))
def massive_mask(h, criterion: SpikeCriterion = SpikeCriterion()):
    """Boolean [..., T, D]: the massive entries of each sequence's hidden state h [..., T, D]."""
    a = _abs32(h)
    return (a > criterion.abs_threshold) & (a > criterion.rel_factor * _sequence_median(a))


@probe_jit(static=("criterion",))
def spike_masks(h, criterion: SpikeCriterion = SpikeCriterion()) -> dict:
    """Spike tokens and spike channels of each sequence: a token (channel) is a spike token (channel) when
    any of its entries is massive. `channel_sign` is the sign of the channel's largest massive entry
    (0 for non-spike channels), which the notes' §7 asks to log.
    h [..., T, D] -> tokens [..., T] bool, channels [..., D] bool, channel_sign [..., D] int."""
    h = jnp.asarray(h).astype(jnp.float32)
    mask = massive_mask(h, criterion)
    at = jnp.argmax(jnp.where(mask, jnp.abs(h), -1.0), axis=-2)[..., None, :]
    sign = jnp.sign(jnp.take_along_axis(h, at, axis=-2)[..., 0, :]).astype(jnp.int32)
    channels = mask.any(-2)
    return {"tokens": mask.any(-1), "channels": channels, "channel_sign": jnp.where(channels, sign, 0)}


def mask_indices(mask) -> list[int]:
    """Host helper: sorted indices along the last axis that are set in any leading index (e.g. the spike
    channels of any sequence from channels [B, D], or of any block from [n_blocks, B, D])."""
    m = np.asarray(mask, bool)
    return np.flatnonzero(m.reshape(-1, m.shape[-1]).any(0)).tolist()


def block_indices(mask) -> list[int]:
    """Host helper: the 1-based block indices set in a per-block mask [n_blocks]."""
    return (np.flatnonzero(np.asarray(mask, bool)) + 1).tolist()


# ------------------------------------------------------------------ life cycle: step-up / step-down (§3.1.1)

@probe_jit
def life_cycle_masks(residual, outputs, initial=None, frac: float = 0.25):
    """Step-up and step-down blocks from the spike channels at the spike token (paper §3.1.1, Table 1).

    residual[i] and outputs[i] (i = 0..n_blocks-1, i.e. block i+1) are the signed values of the spike
    channels at the spike token, shape [n_blocks] (one channel) or [n_blocks, C], typically averaged over
    sequences; `initial` is the residual before block 1 (the embedding; default 0). The paper states the
    rules in words; ours, with r_0 = initial, r_i the residual after block i, o_i its output:
    - peak p = the block with the largest ||r_p||; u = r_p / ||r_p||;
    - step-up: i <= p and <o_i, u> >= frac ||r_p||  (the block pushes the channels towards the spike, by a
      sizeable share of it: "the one or two blocks that produce extreme values");
    - step-down: i > p, ||r_{i-1}|| >= frac ||r_p|| (a spike is still there) and
      <o_i, r_{i-1}> / ||r_{i-1}|| <= -frac ||r_{i-1}||  (opposite sign, comparable magnitude).
    With one channel the projections are just signed values. Returns two bool masks [n_blocks].
    """
    r = jnp.asarray(residual, jnp.float32)
    o = jnp.asarray(outputs, jnp.float32)
    if r.ndim == 1:
        r, o = r[:, None], o[:, None]
    r0 = jnp.zeros_like(r[0]) if initial is None else jnp.reshape(jnp.asarray(initial, jnp.float32), r[0].shape)
    before = jnp.concatenate([r0[None], r[:-1]])
    norms, before_norms = jnp.linalg.norm(r, axis=-1), jnp.linalg.norm(before, axis=-1)
    p = jnp.argmax(norms)
    peak = norms[p]
    blocks = jnp.arange(r.shape[0])
    toward_peak = o @ r[p] / jnp.maximum(peak, 1e-30)
    against_before = jnp.sum(o * before, -1) / jnp.maximum(before_norms, 1e-30)
    up = (blocks <= p) & (toward_peak >= frac * peak) & (peak > 0)
    down = (blocks > p) & (before_norms >= frac * peak) & (against_before <= -frac * before_norms) & (peak > 0)
    return up, down


def life_cycle_blocks(residual, outputs, initial=None, frac: float = 0.25) -> tuple[list[int], list[int]]:
    """Host helper: `life_cycle_masks` as 1-based block lists (step_up, step_down)."""
    up, down = life_cycle_masks(residual, outputs, initial, frac)
    return block_indices(up), block_indices(down)


# ------------------------------------------------------------------ normalised spike tokens (§3.2.1)

@probe_jit
def pairwise_cosines(v):
    """Cosine matrix of the vectors v [..., N, D] -> [..., N, N]."""
    u = jnp.asarray(v).astype(jnp.float32)
    u = u / jnp.maximum(jnp.linalg.norm(u, axis=-1, keepdims=True), 1e-30)
    return u @ jnp.swapaxes(u, -1, -2)


@probe_jit
def off_diagonal_mean(c):
    """Mean over the distinct pairs (i != j) of a pairwise matrix [..., N, N]; NaN when N < 2."""
    n = c.shape[-1]
    return (jnp.sum(c, (-1, -2)) - jnp.trace(c, axis1=-2, axis2=-1)) / (n * (n - 1) if n > 1 else jnp.nan)


@probe_jit
def mean_pairwise_cosine(v):
    """Near-constancy (Eq. 25, Fig. 5): mean cosine over distinct pairs of RMSNorm(v_i), v [..., N, D]
    holding the spike token of N different prompts (e.g. [n_blocks, N, D] for all blocks at once).
    RMSNorm without a learned scale only rescales each vector, so this is the cosine of v itself."""
    return off_diagonal_mean(pairwise_cosines(v))


@probe_jit(static=("k",))
def multi_hotness(v, k: int = 3) -> dict:
    """How multi-hot a vector is (sparsification, Eq. 24), v [..., D]; all three are scale-free, so
    RMSNorm(v) gives the same values:
    - topk_energy: share of ||v||^2 in its top-k channels (-> 1 for a k-hot vector; k capped at D);
    - participation_ratio: (sum v^2)^2 / sum v^4, the effective number of channels (1 for one-hot);
    - peak_over_bound: max |RMSNorm(v)_i| / sqrt(D) = max |v_i| / ||v||, <= 1 by Eq. 23 (= 1 iff one-hot).
    """
    sq = jnp.square(jnp.asarray(v).astype(jnp.float32))
    total = jnp.sum(sq, -1)
    return {"topk_energy": jnp.sum(jax.lax.top_k(sq, min(k, sq.shape[-1]))[0], -1) / total,
            "participation_ratio": jnp.square(total) / jnp.sum(jnp.square(sq), -1),
            "peak_over_bound": jnp.sqrt(jnp.max(sq, -1) / total)}
