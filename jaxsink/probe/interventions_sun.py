"""The probe's interventions, as the prior work ran them (review P1.2-P1.3).

- Spike ablation (Sun et al. 2024, `lib/hook.py` of locuslab/massive-activations): at the step-up block,
  only each sequence's own spike tokens (the positions flagged massive in that sequence) have their spike
  channels overwritten, with zero or with the mean of those channels over all spike tokens. The first
  version overwrote every position flagged in any prompt, in all prompts, with a per-position mean, which
  writes a spike into ordinary tokens.
- Sink masking: every sink head has the key that made it a sink hidden (its argmax of alpha over k < T/2,
  Eq. 27), not always key 0.
- Matched control: as many heads as there are sink heads, drawn uniformly without replacement from all
  attention heads (sink heads included), each with its own top key hidden; drawn `CONTROL_DRAWS` times and
  averaged. The first version masked key 0 of at most the 57 non-sink heads against 213 sink heads.
"""
from __future__ import annotations

import numpy as np

from jaxsink.model.interventions import Interventions, KeyMask

CONTROL_DRAWS = 3


def sun_ablation(flags, values, channels, d_model: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask [N, T, D] bool, mean [D] float32) for the zero / mean ablation. flags [N, T]: the spike tokens
    of each sequence; values [N, T, C]: the residual's spike channels `channels` [C] at the edited block.
    The mean is over all (sequence, position) spike tokens, per channel; it is 0 where nothing is flagged."""
    flags = np.asarray(flags, bool)
    values = np.asarray(values, np.float64)
    channels = np.asarray(channels, int)
    mask = np.zeros((*flags.shape, d_model), bool)
    mask[:, :, channels] = flags[:, :, None]
    mean = np.zeros(d_model, np.float32)
    if flags.any():
        mean[channels] = values[flags].mean(0)
    return mask, mean


def sink_keys(alpha_first_half) -> np.ndarray:
    """The key (position < T/2) that carries each head's largest mean attention, [..., H, T/2] (mean over
    sequences of Eq. 27's alpha) -> int [..., H]: the key that makes a sink head a sink."""
    return np.argmax(np.asarray(alpha_first_half), axis=-1)


def matched_control(sink_heads: dict, rng: np.random.Generator) -> dict:
    """{block: bool[H]} with as many heads set as `sink_heads` {block: bool[H]} has, drawn uniformly without
    replacement from every head of every block in it."""
    blocks = sorted(sink_heads)
    n_heads = len(sink_heads[blocks[0]])
    total = int(sum(np.sum(m) for m in sink_heads.values()))
    pick = rng.choice(len(blocks) * n_heads, size=total, replace=False)
    out = {b: np.zeros(n_heads, bool) for b in blocks}
    for idx in pick:
        out[blocks[idx // n_heads]][idx % n_heads] = True
    return out


def drop_keys(chosen: dict, keys: dict) -> Interventions:
    """Each chosen head ({block: bool[H]}) loses its key `keys[block][h]`; the other heads are left alone (-1)."""
    return Interventions(drop_key=tuple(KeyMask(b, np.where(m, keys[b], -1).astype(np.int32))
                                        for b, m in sorted(chosen.items())))
