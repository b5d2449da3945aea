"""Per-sequence values of the sweep's metrics from the probe's first pass, so that each number in a report
carries its spread over the probe's sequences beside the interval over seeds (`jaxsink.stats.seeds`)."""
from __future__ import annotations

import numpy as np


def per_sequence(p1: dict, n_blocks: int, peak_block: int, eps: float) -> dict:
    """{metric: [one value per probe sequence]} from pass-1 results (NumPy):
    - spike: the sequence's top-1 |h| over blocks 1..n_blocks (its mean is the table's Spike);
    - spike_top1_over_median: top-1 / median |h| of the sequence at the peak block;
    - sink_ratio, sink1_gu: share of attention heads that are sinks in this sequence (Eq. 28; Gu's Sink_1);
    - first_token_mass_mean: mean over heads of the attention mass on key 0;
    - perplexity: exp of the sequence's next-token NLL (the probe window's, not the held-out evaluation's)."""
    top1 = np.stack([np.asarray(p1["blocks"][i]["residual"]["top3"])[:, 0] for i in range(1, n_blocks + 1)])
    b = p1["blocks"][peak_block]["residual"]
    out = {"spike": top1.max(0), "spike_top1_over_median": np.asarray(b["top3"])[:, 0] / np.maximum(b["median"], 1e-30),
           "perplexity": np.exp(np.asarray(p1["nll"], np.float64))}
    heads = [p1["heads"][i] for i in sorted(p1["heads"])]
    if heads:
        out["sink_ratio"] = np.concatenate([h["is_sink"] for h in heads], 1).mean(1)
        mass = np.concatenate([h["first_token_mass"] for h in heads], 1)        # Gu's alpha_1 = alpha_1
        out["sink1_gu"] = (mass > eps).mean(1)
        out["first_token_mass_mean"] = mass.mean(1)
    return {k: np.asarray(v, np.float64).tolist() for k, v in out.items()}
