"""Uncertainty of sweep results: bootstrap intervals over seeds, the per-sequence spread beside them, and the
power of a comparison (how many seeds would resolve it).

The paper's tables are single 7B runs; a tiny-scale comparison of two single runs cannot tell an effect from
seed noise (initialisation and data order). So every number a claim rests on comes with a 95% percentile
bootstrap interval over seeds, resampling each variant's seeds independently (Efron & Tibshirani 1993,
ch. 13). With 2-3 seeds a percentile bootstrap under-covers (it has only n^n resamples and never reaches past
the observed extremes); the reports say so, and `seeds_needed` gives the count at which a comparison would be
resolved by the normal approximation at the measured spread.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

LEVEL = 0.95
N_BOOT = 4000
Z = 1.959964            # two-sided 95% normal quantile


class Interval(NamedTuple):
    """A point estimate with its 95% interval over `n` independent units (seeds or sequences)."""
    mean: float
    lo: float
    hi: float
    n: int

    def excludes(self, lo: float, hi: float) -> bool:
        """True when the whole interval lies outside [lo, hi]."""
        return self.lo > hi or self.hi < lo

    def inside(self, lo: float, hi: float) -> bool:
        return lo <= self.lo and self.hi <= hi


def _quantiles(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    a = (1 - level) / 2
    return float(np.quantile(samples, a)), float(np.quantile(samples, 1 - a))


def bootstrap_mean(values, *, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Mean of `values` (one per seed) and its percentile-bootstrap 95% interval; one value: a point."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_mean: no values")
    if x.size == 1:
        return Interval(float(x[0]), float(x[0]), float(x[0]), 1)
    idx = np.random.default_rng(seed).integers(0, x.size, (n_boot, x.size))
    return Interval(float(x.mean()), *_quantiles(x[idx].mean(1)), int(x.size))


def bootstrap_effect(a, b, kind: str, *, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """The effect of variant a over b from per-seed values, each resampled independently:
    kind "log_ratio": log(mean a / mean b) (spike, perplexity, sink kept); "difference": mean a - mean b
    (sink ratio, in its own units). The interval is a point when both have one seed."""
    xa, xb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if xa.size == 0 or xb.size == 0:
        raise ValueError("bootstrap_effect: a variant has no values")
    rng = np.random.default_rng(seed)
    ma = xa[rng.integers(0, xa.size, (n_boot, xa.size))].mean(1)
    mb = xb[rng.integers(0, xb.size, (n_boot, xb.size))].mean(1)
    point = _effect(xa.mean(), xb.mean(), kind)
    if xa.size == 1 and xb.size == 1:
        return Interval(point, point, point, 1)
    return Interval(point, *_quantiles(_effect(ma, mb, kind)), int(min(xa.size, xb.size)))


def _effect(ma, mb, kind: str):
    if kind == "difference":
        return ma - mb
    if kind == "log_ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.maximum(ma, 1e-30)) - np.log(np.maximum(mb, 1e-30))
    raise ValueError(f"unknown effect kind {kind!r}: log_ratio or difference")


def spread(values) -> float:
    """Sample standard deviation (ddof 1); NaN for fewer than two values."""
    x = np.asarray(values, np.float64)
    return float(x.std(ddof=1)) if x.size > 1 else float("nan")


def effect_sd(a, b, kind: str, seed_sd: float | None = None) -> float:
    """Per-seed standard deviation of one seed's effect estimate: sqrt(sd_a^2 + sd_b^2) on the effect's scale
    (log scale for log_ratio, by the delta method sd(log x) ~ sd(x) / mean(x)). A variant with one seed takes
    `seed_sd` (the calibrated spread, on the same scale) when given."""
    parts = []
    for x in (np.asarray(a, np.float64), np.asarray(b, np.float64)):
        s = spread(x)
        if kind == "log_ratio" and np.isfinite(s):
            s = s / max(abs(float(x.mean())), 1e-30)
        if not np.isfinite(s):
            s = float("nan") if seed_sd is None else seed_sd
        parts.append(s)
    return float(math.sqrt(parts[0] ** 2 + parts[1] ** 2))


def seeds_needed(distance: float, sd: float, cap: int = 1000) -> int | None:
    """Seeds per variant at which a 95% interval of half-width Z * sd / sqrt(n) no longer reaches across
    `distance` (the gap between the estimate and the nearest decision boundary). None when the spread is
    unknown; `cap` + 1 when the estimate sits on the boundary."""
    if not np.isfinite(sd):
        return None
    if sd == 0:
        return 2
    if distance <= 0:
        return cap + 1
    return max(int(math.ceil((Z * sd / distance) ** 2)), 2)


def sequences_needed(distance: float, per_sequence_sd: float, n_now: int, cap: int = 100000) -> int | None:
    """Probe sequences (each seq_len tokens) at which the per-sequence sampling error alone, Z * sd / sqrt(n),
    falls below `distance`; it does not shrink the seed spread, so it resolves a comparison only where the
    per-sequence error dominates."""
    if not np.isfinite(per_sequence_sd) or per_sequence_sd == 0:
        return None
    if distance <= 0:
        return cap + 1
    return max(int(math.ceil((Z * per_sequence_sd / distance) ** 2)), n_now)
