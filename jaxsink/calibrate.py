"""Seed spread of one variant for the claim bands (`jaxsink.claims.SEED_SD`): the standard deviation over
seeds of one run's value, on the scale the claims compare it (log for spike, top-1/median and perplexity;
the fraction itself for the sink ratio).

`python -m jaxsink.calibrate runs/table5_norm_s3 pre` prints the dict to write into claims.py, measured on a
variant before any comparison of the table is looked at."""
from __future__ import annotations

import json
import pathlib

import numpy as np

SCALES = {"spike": "log", "spike_top1_over_median": "log", "perplexity": "log", "sink_ratio": "linear"}


def seed_sd(values, scale: str) -> float:
    x = np.asarray(values, np.float64)
    if len(x) < 2:
        raise ValueError(f"seed spread needs at least 2 seeds, got {len(x)}")
    return float((np.log(np.maximum(x, 1e-30)) if scale == "log" else x).std(ddof=1))


def calibrate(sweep_dir, variant: str) -> dict:
    folder = pathlib.Path(sweep_dir) / variant
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("seed_*/result.json"))]
    return {m: seed_sd([r[m] for r in rows], s) for m, s in SCALES.items()} | {"seeds": len(rows)}


if __name__ == "__main__":
    import sys
    print(json.dumps(calibrate(sys.argv[1], sys.argv[2]), indent=1))
