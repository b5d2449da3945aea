"""Does a sweep agree with the paper? Each experiment file lists its Section 4 claims as `CLAIMS` (`Claim`
records: one metric compared between two variants) and the paper's numbers as `PAPER` (`PaperRow`s);
`verdict` judges one claim on our results.

Relations: ">" (a above b), "<" (a below b), "~" (a unchanged from b: inside the no-effect band both ways)
and "kept" (a keeps at least KEPT_FRACTION of b: one-sided on purpose, the paper's "keeps the sinks" holds
for 31.1% vs 46.0% (Table 7 static token gate) and for 73.9% vs 46.0% (Table 4 attention-only)).

Verdicts rest on intervals (`jaxsink.stats.uncertainty`): the effect of a over b (log ratio; for the sink
ratio, the difference in points) gets a 95% bootstrap interval over seeds. A direction **agrees** only when
the whole interval lies beyond the no-effect band the claimed way and **disagrees** only when it lies
beyond it the other way; "~" agrees when the interval lies inside the band and disagrees when it lies
outside it; everything else is **inconclusive**, with the reason and the seeds (and probe sequences) that
would resolve it. A variant with one seed has no interval: inconclusive ("one seed"). Spike claims are
judged twice, on the scale-free top-1/median and on the absolute top-1 |h| (sandwich norm bounds the
residual, so the absolute value alone confuses scale with spikes); both must agree.

Gates: a spike or sink claim is inconclusive when the two runs' perplexities differ by more than
TRAINED_RATIO (a run that did not train comparably says nothing about its spikes or sinks); a sink claim is
inconclusive when neither variant (for "kept": the reference) reaches SINK_FLOOR.

Bands (`BANDS`, written before the seed tables were run; docs/reproduction_intro.md): each is the larger of
the first version's fixed band and the seed-to-seed standard deviation of one run measured on the calibration
runs (`CALIBRATION`): an effect smaller than the scatter between two seeds of the same run is no effect a
single-run table can show.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jaxsink.experiments import Claim, PaperRow
from jaxsink.stats import uncertainty as unc
from jaxsink.stats.sink_validity import undefined_reason


RELATIONS = (">", "<", "~", "kept")
METRICS = ("perplexity", "sink_ratio", "spike")
SPIKE_STATISTICS = ("spike_top1_over_median", "spike")      # scale-free first; both must agree
KEPT_FRACTION = 0.5
TRAINED_RATIO = 1.3        # the paper's widest gap between rows it compares: 1.24x (Table 4 linear FFN)

# first version's bands: log ratio for spike / perplexity, points for the sink ratio
DEFAULT_BANDS = {"spike": math.log(1.25), "spike_top1_over_median": math.log(1.25),
                 "perplexity": math.log(1.05), "sink_ratio": 0.05}
# seed-to-seed sd of one run on the effect's scale (log for ratios, fraction for the sink ratio), measured on
# CALIBRATION; None until measured (then the default band applies)
SEED_SD = {"spike": 0.284, "spike_top1_over_median": 0.249, "perplexity": 0.0121, "sink_ratio": 0.0196}
CALIBRATION = ("Table 5 `pre`, seeds 0-2, 150 steps (0.3M tokens), configs/tiny_sinks.py, measured 2026-12-01 before "
               "any other variant had finished: `python -m jaxsink.calibrate runs/table5_norm_s3 pre`")
BANDS = {m: max(DEFAULT_BANDS[m], SEED_SD[m] or 0.0) for m in DEFAULT_BANDS}
SINK_FLOOR = BANDS["sink_ratio"]
EFFECT_KIND = {"sink_ratio": "difference"}       # every other statistic: log_ratio


class Judgement(NamedTuple):
    verdict: str         # agrees | disagrees | inconclusive
    reason: str
    effect: unc.Interval


def verdict(claim, results: dict, *, points: bool = False) -> tuple[str, str]:
    """("agrees" | "disagrees" | "inconclusive" | "not run", evidence) for one claim on {variant: row}.
    A row holds the metric's mean and, from a seeded sweep, `seeds` {metric: [per seed]}. `points=True`
    judges single values as if they were exact (the paper's own rows), never a run of ours."""
    claim = Claim(*claim)
    if claim.a not in results or claim.b not in results:
        return "not run", f"{claim.a if claim.a not in results else claim.b} was not run"
    ra, rb = results[claim.a], results[claim.b]
    gate = _gates(claim, ra, rb)
    if gate:
        return "inconclusive", gate
    stats = [s for s in SPIKE_STATISTICS if s in ra and s in rb] if claim.metric == "spike" else [claim.metric]
    if claim.metric == "spike" and not points and len(stats) < 2:
        return "inconclusive", "no scale-free spike statistic (top-1/median) for both variants"
    judged = [(s, _judge(claim, s, ra, rb, points)) for s in stats]
    evidence = "; ".join(f"{_label(s)}: {_evidence(claim, s, ra, rb, j)}" for s, j in judged)
    kinds = {j.verdict for _, j in judged}
    if len(kinds) == 1:
        return kinds.pop(), evidence
    return "inconclusive", evidence + "; the statistics disagree with each other"


def _gates(claim: Claim, ra: dict, rb: dict) -> str:
    pa, pb = float(ra["perplexity"]), float(rb["perplexity"])
    if claim.metric != "perplexity" and max(pa, pb) > TRAINED_RATIO * min(pa, pb):
        return f"perplexity {pa:.2f} vs {pb:.2f}: not trained comparably (> {TRAINED_RATIO}x)"
    if claim.metric == "sink_ratio":
        for name, row in ((claim.a, ra), (claim.b, rb)):
            if row.get("sink_ratio_defined") is False:
                return f"{name}: {undefined_reason(row.get('probe_seq_len', 0), 0.3)}"
        x, y = float(ra["sink_ratio"]), float(rb["sink_ratio"])
        if claim.relation == "kept" and y < SINK_FLOOR:
            return f"{claim.b} has {100 * y:.1f}% sinks, under the {100 * SINK_FLOOR:.0f}% floor: nothing to keep"
        if max(x, y) < SINK_FLOOR:
            return f"sink ratio {100 * x:.1f}% vs {100 * y:.1f}%: neither reaches the {100 * SINK_FLOOR:.0f}% floor"
    return ""


def _values(row: dict, stat: str) -> list[float]:
    return [float(v) for v in row.get("seeds", {}).get(stat, [row[stat]])]


def _judge(claim: Claim, stat: str, ra: dict, rb: dict, points: bool) -> Judgement:
    xa, xb = _values(ra, stat), _values(rb, stat)
    kind = EFFECT_KIND.get(stat, "log_ratio")
    if claim.relation == "kept":
        kind = "log_ratio"
    effect = unc.bootstrap_effect(xa, xb, kind)
    if not points and min(len(xa), len(xb)) < 2:
        return Judgement("inconclusive", "one seed: no interval", effect)
    lo_edge, hi_edge = _edges(claim.relation, stat)
    good, bad = _outcome(claim.relation, effect, lo_edge, hi_edge)
    if good or bad:
        return Judgement("agrees" if good else "disagrees", "", effect)
    return Judgement("inconclusive", "the interval reaches into the band", effect)


def _edges(relation: str, stat: str) -> tuple[float, float]:
    if relation == "kept":
        return math.log(KEPT_FRACTION), math.log(KEPT_FRACTION)
    return -BANDS[stat], BANDS[stat]


def _outcome(relation: str, e: unc.Interval, lo: float, hi: float) -> tuple[bool, bool]:
    if relation == ">":
        return e.lo > hi, e.hi < lo
    if relation == "<":
        return e.hi < lo, e.lo > hi
    if relation == "~":
        return e.inside(lo, hi), e.excludes(lo, hi)
    if relation == "kept":
        return e.lo > lo, e.hi < lo
    raise ValueError(f"unknown relation {relation!r}: one of {RELATIONS}")


def _evidence(claim: Claim, stat: str, ra: dict, rb: dict, j: Judgement) -> str:
    kind = "log_ratio" if claim.relation == "kept" else EFFECT_KIND.get(stat, "log_ratio")
    text = f"{claim.a} {_summary(stat, ra)} vs {claim.b} {_summary(stat, rb)}; {_effect_text(kind, j.effect)}"
    if j.verdict != "inconclusive":
        return text
    return f"{text}; {j.reason}; {_power(claim, stat, ra, rb, kind, j.effect)}"


def _summary(stat: str, row: dict) -> str:
    vals = _values(row, stat)
    iv = unc.bootstrap_mean(vals)
    seq = row.get("per_sequence_sd", {}).get(stat)
    text = _fmt(stat, iv.mean) + (f" [{_fmt(stat, iv.lo)}, {_fmt(stat, iv.hi)}]" if iv.n > 1 else "")
    text += f" ({iv.n} seed{'s' if iv.n > 1 else ''}"
    return text + (f", per-sequence sd {_fmt(stat, seq)})" if seq is not None else ")")


def _effect_text(kind: str, e: unc.Interval) -> str:
    if kind == "difference":
        return f"difference {100 * e.mean:+.1f} points" + (f" [{100 * e.lo:+.1f}, {100 * e.hi:+.1f}]" if e.n > 1 else "")
    return f"ratio {math.exp(e.mean):.2f}x" + (f" [{math.exp(e.lo):.2f}, {math.exp(e.hi):.2f}]" if e.n > 1 else "")


def _power(claim: Claim, stat: str, ra: dict, rb: dict, kind: str, e: unc.Interval) -> str:
    """Seeds per variant (and probe sequences) that would resolve the claim at the measured spread; the
    distance is from the estimate to the nearest decision edge."""
    lo, hi = _edges(claim.relation, stat)
    distance = min(abs(e.mean - lo), abs(e.mean - hi))
    seed_sd = None if (kind == "log_ratio" and stat == "sink_ratio") else SEED_SD.get(stat)   # scales must match
    n = unc.seeds_needed(distance, unc.effect_sd(_values(ra, stat), _values(rb, stat), kind, seed_sd))
    text = ("seed spread unknown (one seed, not calibrated)" if n is None else
            f"about {n} seeds per variant would resolve it" if n <= 1000 else "the estimate sits on the edge")
    seq = [row.get("per_sequence_sd", {}).get(stat) for row in (ra, rb)]
    if None in seq or not ra.get("n_sequences"):
        return text
    if kind == "log_ratio":       # delta method: sd of log x ~ sd(x) / mean(x)
        seq = [s / max(abs(float(row[stat])), 1e-30) for s, row in zip(seq, (ra, rb))]
    need = unc.sequences_needed(distance, float(np.hypot(*seq)), int(ra["n_sequences"]))
    return text + ("" if need is None else f"; probe sampling alone: about {need} sequences")


def _label(stat: str) -> str:
    return {"spike_top1_over_median": "top-1/median", "spike": "top-1 |h|"}.get(stat, stat.replace("_", " "))


def _fmt(metric: str, v: float) -> str:
    return f"{100 * v:.1f}%" if metric == "sink_ratio" else f"{v:.2f}" if metric == "perplexity" else f"{v:.1f}"


def paper_results(paper: dict) -> dict:
    """The paper's rows as results (sink ratio as a fraction), for judging CLAIMS on PAPER (points=True)."""
    return {k: {"perplexity": r.perplexity, "sink_ratio": r.sink_ratio_percent / 100, "spike": r.spike}
            for k, r in ((k, PaperRow(*v)) for k, v in paper.items())}


def claim_lines(claims, results: dict) -> list[str]:
    """A markdown table: claim | verdict | our evidence."""
    lines = ["| paper's claim | our run | evidence |", "|---|---|---|"]
    for claim in claims:
        v, evidence = verdict(claim, results)
        lines.append(f"| {Claim(*claim).text} | **{v}** | {evidence} |")
    return lines
