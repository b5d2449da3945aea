"""One sweep row from the runs of one variant under several seeds: the mean over seeds of every metric a
claim can rest on, the per-seed values beside it (for the bootstrap in `jaxsink.stats.uncertainty`) and the
spread over the probe's sequences (its own sampling error, reported beside the seed interval)."""
from __future__ import annotations

import numpy as np

# metrics a claim can rest on; `first_token_mass_mean` is the mean over attention blocks and heads of the
# attention every query gives key 0 (paper App. A's alpha_1 with queries t >= 0)
SEED_METRICS = ("perplexity", "sink_ratio", "sink1_gu", "first_token_mass_mean", "spike", "spike_top1_over_median")


def _scalar(row: dict, metric: str):
    if metric == "first_token_mass_mean" and metric not in row:
        mass = row.get("first_token_mass") or []
        return float(np.mean(mass)) if len(mass) else None
    v = row.get(metric)
    return None if v is None else float(v)


def combine_seeds(rows: list[dict]) -> dict:
    """rows: one result dict per seed (as `jaxsink.sweep` writes them). Returns the first row's descriptive
    fields with every SEED_METRICS entry replaced by its mean over seeds, plus `seeds` {metric: [per seed]},
    `n_seeds`, `per_sequence_sd` {metric: mean over seeds of the sd over probe sequences} and `n_sequences`."""
    if not rows:
        raise ValueError("combine_seeds: no runs")
    out = dict(rows[0])
    out["seeds"], out["per_sequence_sd"] = {}, {}
    for metric in SEED_METRICS:
        vals = [_scalar(r, metric) for r in rows]
        if any(v is None for v in vals):
            continue
        out["seeds"][metric] = vals
        out[metric] = float(np.mean(vals))
        per_seq = [r.get("per_sequence", {}).get(metric) for r in rows]
        if all(p is not None and len(p) > 1 for p in per_seq):
            out["per_sequence_sd"][metric] = float(np.mean([np.std(p, ddof=1) for p in per_seq]))
            out["n_sequences"] = int(np.mean([len(p) for p in per_seq]))
    out["n_seeds"] = len(rows)
    out["seed_values"] = [r.get("seed") for r in rows]
    out.pop("per_sequence", None)
    return out
