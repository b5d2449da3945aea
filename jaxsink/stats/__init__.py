"""Spike and sink statistics: pure, jit-able functions of captured intermediates (no model code here).

One namespace for the topic modules, so callers write `from jaxsink import stats; stats.head_stats(...)`:
- `activations`: massive activations, spike masks, life cycle, normalised spike tokens (§3.1, §3.2.1);
- `attention`: importance scores, sink heads, sink ratio, Gu's Sink_1, locality, sink-key rank (App. A);
- `mechanism`: SiLU near identity, U_k / S_k quadratic forms, W_VO (§3.1.2-3.1.3).
The same functions serve training-time logging (inside the jitted step: results stay traced), probes of
trained checkpoints and of imported models (called from the host: results come back as NumPy).
"""
from jaxsink.stats.activations import (SpikeCriterion, block_indices, life_cycle_blocks, life_cycle_masks,
                                       magnitude_stats, mask_indices, massive_mask, mean_pairwise_cosine,
                                       multi_hotness, off_diagonal_mean, pairwise_cosines, spike_masks,
                                       spike_top1)
from jaxsink.stats.attention import (distance_by_sink, effective_rank, head_stats, head_stats_blockwise,
                                     proxy_probs, sink_flags, sink_ratio, sink_view)
from jaxsink.stats.mechanism import (eigvec_alignment, fold_norm_scale, silu_identity, symmetric_part,
                                     top_eigen, u_matrix, uk_frobenius, w_vo)

__all__ = [
    "SpikeCriterion", "block_indices", "life_cycle_blocks", "life_cycle_masks", "magnitude_stats",
    "mask_indices", "massive_mask", "mean_pairwise_cosine", "multi_hotness", "off_diagonal_mean",
    "pairwise_cosines", "spike_masks", "spike_top1",
    "distance_by_sink", "effective_rank", "head_stats", "head_stats_blockwise", "proxy_probs", "sink_flags",
    "sink_ratio", "sink_view",
    "eigvec_alignment", "fold_norm_scale", "silu_identity", "symmetric_part", "top_eigen", "u_matrix",
    "uk_frobenius", "w_vo",
]
