"""What the Bigram-Backcopy testbed's variants cost a deployment (`jaxsink.impact`), judged over seeds.

`python -m jaxsink.bb_impact EXPERIMENT --runs DIR --out OUT --seeds 0 1 2 3 4 5` runs the impact grid
(`OPTIONS`) on every finished run DIR/seed_S/VARIANT of an `experiments/bb_*.py` file (trained by
`jaxsink.bb_seeds`; a run is finished when its measure.json exists), writes OUT/seed_S/VARIANT/impact.json
(re-running skips those that exist), reads the per-run figures below and judges the file's IMPACT_CLAIMS over
seeds into OUT/impact_claims.md and .json.

The testbed's sequences are 64 tokens from BOS with learned absolute positions, so every chunk and every
decoded sequence is one whole held-out sequence from BOS (`ImpactOptions.rows`) and decoding stays inside the
trained length (a token keeps its own position embedding; cache ranks do not enter attention without RoPE).

Figures per run, natural-log perplexity ratios of one model under two deployments (0.01 ~ 1% more):
- `window_cost`: window-only cache of BUDGET tokens vs the unbounded cache (both decoded token by token);
- `sink_restore`: window-only vs StreamingLLM with BOS as the one sink, same budget;
- `a8_tensor_cost`, `a4_tensor_cost`, `a4_token_cost`, `w8a8_tensor_cost`: that entry (nothing kept exact)
  vs float; `a4_tensor_keep_gain`: A4/tensor with nothing kept vs with BOS (and PrefixQuant's outlier
  tokens) exact; `a4_tensor_over_token`: A4/tensor vs A4/token; `wanda_24_cost`: Wanda 2:4 vs float.

Rules, fixed before the seeds were run (disclosed: seed 0 and 1 of `pre` were measured first to size the
grid). Intervals are 95% percentile bootstrap intervals over seeds (`jaxsink.stats.uncertainty`, 4,000
resamples, each variant's seeds resampled independently, fixed RNG), as for every claim.
- The effect is the mean of a's figure (b None: against 0) or mean(a) - mean(b).
- BAND = log(1.01): a cost under 1% perplexity is no cost. ">" agrees when the interval lies above +BAND and
  disagrees when it lies below -BAND; "<" mirrored; "~" agrees when the interval lies inside [-BAND, BAND]
  and disagrees when it lies wholly outside; anything else is inconclusive.
- Inconclusive with fewer than MIN_SEEDS seeds per variant, or when the two variants' mean float held-out
  loss (log perplexity) differ by more than TRAINED_RATIO (`jaxsink.bb_seeds`' rules).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import jax
import numpy as np

from jaxsink import experiments
from jaxsink.bb_seeds import MIN_SEEDS, TRAINED_RATIO, collect_table
from jaxsink.impact.plots import new_figure, save_figure
from jaxsink.impact.runner import KEEP, ImpactOptions, impact
from jaxsink.stats import uncertainty as unc
from jaxsink.train.setup import load_trained
from jaxsink.workdir import load_data, load_workdir_config

BAND = math.log(1.01)
BUDGET = 8
ENTRIES = ("W8A8/tensor", "W8A8/token", "A8/tensor", "A8/token", "A4/tensor", "A4/token")
OPTIONS = dict(num_sequences=64, batch_size=16, calib_sequences=16, parts=("quant", "kv", "prune"),
               entries=ENTRIES, decode_sequences=64, budgets=(BUDGET, 16, 32), sinks=1, keep_first=1,
               plots=False, progress=False)
FIGURES = ("window_cost", "sink_restore", "a8_tensor_cost", "a4_tensor_cost", "a4_token_cost", "w8a8_tensor_cost",
           "a4_tensor_keep_gain", "a4_tensor_over_token", "wanda_24_cost")


def figures(r: dict) -> dict:
    """The figures above from one impact.json (as a dict)."""
    q = {(row["name"], row["keep"]): math.log(row["perplexity"]) for row in r["quant"]}
    ev = {row["policy"]: math.log(row["perplexity"]) for row in r["eviction"]}
    pr = {(row["method"], row["pattern"]): math.log(row["perplexity"]) for row in r["pruning"]}
    base, window = math.log(r["float_perplexity"]), ev[f"window:{BUDGET}"]
    return {"float_loss": base, "window_cost": window - math.log(r["decode_float_perplexity"]),
            "sink_restore": window - ev[f"streaming:1+{BUDGET - 1}"],
            "a8_tensor_cost": q["A8/tensor", "none"] - base, "a4_tensor_cost": q["A4/tensor", "none"] - base,
            "a4_token_cost": q["A4/token", "none"] - base, "w8a8_tensor_cost": q["W8A8/tensor", "none"] - base,
            "a4_tensor_keep_gain": q["A4/tensor", "none"] - q["A4/tensor", KEEP],
            "a4_tensor_over_token": q["A4/tensor", "none"] - q["A4/token", "none"],
            "wanda_24_cost": pr["wanda", "2:4"] - base}


def judge(claim, table: dict) -> tuple[str, str, unc.Interval | None]:
    """(verdict, evidence, effect interval) of one IMPACT_CLAIM on {variant: {figure: [value per seed]}}."""
    _, fig, rel, a, b = claim
    missing = [v for v in (a, b) if v is not None and v not in table]
    if missing:
        return "not run", f"{missing[0]} was not run", None
    xa, xb = table[a][fig], (table[b][fig] if b else None)
    n = min(len(xa), len(xb) if b else len(xa))
    if n < MIN_SEEDS:
        return "inconclusive", f"{n} seeds: fewer than {MIN_SEEDS}", None
    if b:
        la, lb = np.mean(table[a]["float_loss"]), np.mean(table[b]["float_loss"])
        if max(la, lb) > TRAINED_RATIO * min(la, lb):
            return "inconclusive", f"float loss {la:.3f} vs {lb:.3f}: not trained comparably", None
    e = unc.bootstrap_effect(xa, xb, "difference") if b else unc.bootstrap_mean(xa)
    good, bad = {">": (e.lo > BAND, e.hi < -BAND), "<": (e.hi < -BAND, e.lo > BAND),
                 "~": (e.inside(-BAND, BAND), e.excludes(-BAND, BAND))}[rel]
    ev = f"{a} {_pct(unc.bootstrap_mean(xa))}" + (f" vs {b} {_pct(unc.bootstrap_mean(xb))}; difference {_pct(e)}"
                                                  if b else "")
    return ("agrees" if good else "disagrees" if bad else "inconclusive"), ev + f" ({n} seeds)", e


def _pct(iv: unc.Interval) -> str:
    """A log-ratio interval as percent change in perplexity."""
    f = lambda x: 100 * math.expm1(x)  # noqa: E731
    return f"{f(iv.mean):+.2f}% [{f(iv.lo):+.2f}, {f(iv.hi):+.2f}]"


def run_one(workdir, out) -> dict:
    """The impact grid on one finished testbed run (skipped when OUT/impact.json exists); its figures."""
    out = pathlib.Path(out)
    if not (out / "impact.json").exists():
        cfg = load_workdir_config(workdir)
        model = load_trained(workdir)
        text = model.tokenizer.decode(load_data(cfg, pathlib.Path(workdir))[1].heldout)
        t = cfg.train.seq_len
        impact(model, text, out, ImpactOptions(seq_len=t, decode_len=t, rows=t, **OPTIONS))
    return figures(json.loads((out / "impact.json").read_text()))


def run_all(name: str, runs, out, seeds, only=None) -> dict:
    """{variant: {figure: [value per seed]}} over the finished runs (seed order), running what is missing."""
    exp = experiments.load(name)
    variants = [v for v in exp.PAPER if not only or v in only]
    table: dict = {}
    for s in seeds:
        for v in variants:
            wd = pathlib.Path(runs) / f"seed_{s}" / v
            if (wd / "measure.json").exists():
                for k, x in run_one(wd, pathlib.Path(out) / f"seed_{s}" / v).items():
                    table.setdefault(v, {}).setdefault(k, []).append(x)
    bos = collect_table(runs, seeds, variants)
    for v in table:
        table[v]["bos_attention"] = bos[v]["bos_attention"]
    return table


def report(name: str, table: dict, out) -> str:
    """OUT/impact_claims.md and .json: the figures per variant (mean [95% interval] over seeds) and verdicts."""
    exp = experiments.load(name)
    shown = ("window_cost", "sink_restore", "a8_tensor_cost", "a4_tensor_cost", "a4_token_cost",
             "a4_tensor_keep_gain", "wanda_24_cost")
    lines = [f"# Deployment costs: {exp.TITLE}", "",
             "Perplexity change in % (mean over seeds [95% bootstrap interval]); rules in `jaxsink/bb_impact.py`.", "",
             "| variant | seeds | float ppl | BOS attention | " + " | ".join(shown) + " |",
             "|---|---|---|---|" + "---|" * len(shown)]
    for v, m in table.items():
        cells = [_pct(unc.bootstrap_mean(m[f])) for f in shown]
        lines.append(f"| {v} | {len(m['float_loss'])} | {math.exp(np.mean(m['float_loss'])):.3f} | "
                     f"{np.mean(m['bos_attention']):.2f} | " + " | ".join(cells) + " |")
    lines += ["", "| claim | verdict | evidence |", "|---|---|---|"]
    verdicts = []
    for claim in exp.IMPACT_CLAIMS:
        v, ev, e = judge(claim, table)
        verdicts.append({"claim": claim[0], "figure": claim[1], "relation": claim[2], "a": claim[3], "b": claim[4],
                         "verdict": v, "evidence": ev, "effect": None if e is None else e._asdict()})
        lines.append(f"| {claim[0]} | **{v}** | {ev} |")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "impact_claims.json").write_text(json.dumps({"experiment": name, "band": BAND, "budget": BUDGET,
                                                         "table": table, "claims": verdicts}, indent=1))
    (out / "impact_claims.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


PLOTTED = ("window_cost", "sink_restore", "a4_tensor_cost", "a4_tensor_keep_gain")


def plot(table: dict, path) -> str:
    """Bars: each variant's mean figure (in % perplexity) with its 95% interval over seeds, per figure."""
    plt, fig, axes = new_figure(len(PLOTTED), 3.2)
    for ax, f in zip(axes, PLOTTED):
        ivs = [unc.bootstrap_mean(m[f]) for m in table.values()]
        mean = [100 * math.expm1(i.mean) for i in ivs]
        err = [[m - 100 * math.expm1(i.lo) for m, i in zip(mean, ivs)],
               [100 * math.expm1(i.hi) - m for m, i in zip(mean, ivs)]]
        ax.bar(range(len(ivs)), mean, yerr=err, capsize=3, color="tab:blue")
        ax.axhline(100 * math.expm1(BAND), color="gray", ls=":", lw=1)
        ax.set_xticks(range(len(ivs)), list(table), rotation=45, ha="right", fontsize=8)
        ax.set_title(f.replace("_", " "), fontsize=9)
        ax.set_ylabel("% perplexity" if f == PLOTTED[0] else "")
    return save_figure(plt, fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxsink.bb_impact", description=__doc__.split("\n")[0])
    p.add_argument("experiment")
    p.add_argument("--runs", required=True, help="a jaxsink.bb_seeds workdir (DIR/seed_S/VARIANT)")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+")
    p.add_argument("--compile-cache", help="a persistent XLA cache: the seeds of one variant compile once")
    args = p.parse_args(argv)
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    table = run_all(args.experiment, args.runs, args.out, args.seeds, args.only)
    print(report(args.experiment, table, args.out))
    print(plot(table, pathlib.Path(args.out) / "impact_claims.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
