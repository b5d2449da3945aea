"""Does a sweep agree with the paper? Each experiment file lists its Section 4 claims as `CLAIMS`, pairwise
comparisons of one metric between two variants; `verdict` judges one claim on our results.

A claim is a `jaxsink.experiments.Claim` (text, metric, a, relation, b) with relation ">" (a above b), "<"
(a below b) or "~" (a kept at the level of b). Rules (our choice; the paper states directions, not tolerances):
- spike and perplexity: a direction holds when the ratio passes 1.25x (perplexity: 1.05x, since the paper's
  own "unchanged" rows differ by up to 3%) the right way, fails when it passes it the wrong way, and is
  inconclusive in between; "~" holds within the same factor.
- a spike or sink claim is inconclusive when one variant's perplexity is more than TRAINED_RATIO times the
  other's: a run that did not train comparably (e.g. diverged) says nothing about its spike or sinks.
- sink ratio: inconclusive when both values are below SINK_FLOOR, 10%: about two sink heads of 16. One head
  in a single-seed run is not evidence either way. The first version used 5%; at the tiny scale the
  baseline's single sink head (5.3%) then made every comparison with a 0% variant a "disagrees". Otherwise a
  direction needs a difference of SINK_MARGIN, and "~" (sinks kept) holds when a >= 0.7 b and fails when
  a < 0.5 b.
"""
from __future__ import annotations

SINK_FLOOR = 0.10
SINK_MARGIN = 0.05
RATIO = {"spike": 1.25, "perplexity": 1.05}
TRAINED_RATIO = 1.5


def verdict(claim, results: dict) -> tuple[str, str]:
    """("agrees" | "disagrees" | "inconclusive" | "not run", evidence) for one `Claim` on {variant: row}."""
    metric, a, relation, b = claim.metric, claim.a, claim.relation, claim.b
    if a not in results or b not in results:
        return "not run", f"{a if a not in results else b} was not run"
    x, y = float(results[a][metric]), float(results[b][metric])
    evidence = f"{a} {_fmt(metric, x)} vs {b} {_fmt(metric, y)}"
    ppl = sorted(float(results[v]["perplexity"]) for v in (a, b))
    if metric != "perplexity" and ppl[1] > TRAINED_RATIO * ppl[0]:
        return "inconclusive", (f"{evidence}; perplexity {results[a]['perplexity']:.2f} vs "
                                f"{results[b]['perplexity']:.2f}: not trained comparably")
    if metric == "sink_ratio":
        return _sink_verdict(x, y, relation), evidence
    return _ratio_verdict(x, y, relation, RATIO[metric]), evidence


def _ratio_verdict(x: float, y: float, relation: str, factor: float) -> str:
    r = x / y if y else float("inf")
    if relation == "~":
        return "agrees" if 1 / factor <= r <= factor else "disagrees"
    up = r >= factor if relation == ">" else r <= 1 / factor
    down = r <= 1 / factor if relation == ">" else r >= factor
    return "agrees" if up else "disagrees" if down else "inconclusive"


def _sink_verdict(x: float, y: float, relation: str) -> str:
    if max(x, y) < SINK_FLOOR:
        return "inconclusive"
    if relation == "~":
        return "agrees" if x >= 0.7 * y else "disagrees" if x < 0.5 * y else "inconclusive"
    d = x - y if relation == ">" else y - x
    return "agrees" if d >= SINK_MARGIN else "disagrees" if d <= -SINK_MARGIN else "inconclusive"


def _fmt(metric: str, v: float) -> str:
    return f"{100 * v:.1f}%" if metric == "sink_ratio" else f"{v:.2f}" if metric == "perplexity" else f"{v:.1f}"


def claim_lines(claims, results: dict) -> list[str]:
    """A markdown table: claim | verdict | our evidence."""
    lines = ["| paper's claim | our run | evidence |", "|---|---|---|"]
    for claim in claims:
        v, evidence = verdict(claim, results)
        lines.append(f"| {claim.text} | **{v}** | {evidence} |")
    return lines
