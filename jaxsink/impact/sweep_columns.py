"""The deployment-cost columns of a sweep report (issue 15 item 5): a few figures from each variant's
`VARIANT/impact/impact.json`, written by `jaxsink sweep ... --impact` (the small grid of `sweep_options`) or by
hand with `jaxsink impact --workdir VARIANT --out VARIANT/impact`. A variant without one gets blank cells.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

IMPACT_DIR = "impact"       # a variant's impact output folder, inside its workdir
ENTRIES = ("W8A8/tensor", "A8/tensor")
COLUMNS = ("ΔPPL W8A8/tensor", "ΔPPL A8/tensor", "ΔPPL window (smallest budget)", "ΔPPL Wanda 50%")
NOTE = ("\nΔPPL columns: perplexity increase over the float model from each variant's impact/impact.json "
        "(`jaxsink impact`, docs/impact.md): per-tensor W8A8 and A8 with nothing kept exact, window-only KV "
        "eviction at the smallest budget (@budget, over the full cache), 50% unstructured Wanda; blank: no impact.json.")


def columns(r: dict) -> dict:
    """COLUMNS -> value (None where impact.json lacks it): perplexity increases over the float model under
    per-tensor W8A8 and A8 (nothing kept exact), window-only eviction at the smallest budget (over the full
    cache's decode perplexity) and 50% unstructured Wanda; `window budget` is that budget."""
    quant = {q["name"]: q["delta"] for q in r.get("quant", []) if q["keep"] == "none"}
    window = sorted((e["budget"], e["perplexity"]) for e in r.get("eviction", []) if e["kind"] == "window")
    full = r.get("decode_float_perplexity")
    wanda = [p["delta"] for p in r.get("pruning", []) if p["method"] == "wanda" and p["pattern"] == "unstructured"]
    out = {COLUMNS[0]: quant.get(ENTRIES[0]), COLUMNS[1]: quant.get(ENTRIES[1]),
           COLUMNS[2]: window[0][1] - full if window and window[0][1] is not None and full is not None else None,
           COLUMNS[3]: wanda[0] if wanda else None}
    out["window budget"] = window[0][0] if window else None
    return out


def read(folders) -> dict | None:
    """The columns of the variant whose run folders (one per seed) are `folders`, averaged over the seeds
    that have an impact.json (`n`: how many); None when none has one."""
    rows = [columns(json.loads(p.read_text())) for f in folders
            if (p := pathlib.Path(f) / IMPACT_DIR / "impact.json").exists()]
    if not rows:
        return None
    values = {k: [r[k] for r in rows] for k in rows[0]}
    out = {k: float(np.mean(v)) if None not in v else None for k, v in values.items()}
    return {**out, "n": len(rows)}


def headers(results: dict) -> list[str]:
    """The extra table headers: COLUMNS when any variant has impact columns, else none."""
    return list(COLUMNS) if any(r.get("impact") for r in results.values()) else []


def cells(row: dict, heads: list[str]) -> str:
    """` a | b | ... |` for one variant's row (blank cells without impact.json)."""
    imp = row.get("impact") or {}
    out = ""
    for h in heads:
        v = imp.get(h)
        budget = f" @{imp['window budget']:.0f}" if h == COLUMNS[2] and v is not None else ""
        out += f" {'' if v is None else f'{v:+.2f}{budget}'} |"
    return out


def sweep_options(spec, rows: int, progress: bool):
    """The small grid a sweep runs per variant: W8A8/A8 per tensor, one window/StreamingLLM/H2O budget (1/8
    of the decoded length), pruning; sized to the model's positions and, on bb, to its rows."""
    from jaxsink.impact.runner import ImpactOptions
    decode = min(256, spec.max_seq_len, rows or 256)
    return ImpactOptions(seq_len=min(128, decode), entries=ENTRIES, parts=("quant", "kv", "prune"),
                         decode_len=decode, budgets=(max(decode // 8, 8),), plots=False, progress=progress, rows=rows)


def run_variant(vdir, progress: bool = True) -> pathlib.Path:
    """`jaxsink impact` on a trained variant's held-out text with `sweep_options`; returns its impact.json."""
    from jaxsink.data.generated import row_length
    from jaxsink.impact.runner import impact
    from jaxsink.train.setup import load_trained
    from jaxsink.workdir import load_data, load_workdir_config
    vdir = pathlib.Path(vdir)
    cfg = load_workdir_config(vdir)
    model = load_trained(vdir)
    _, splits = load_data(cfg, vdir)
    rows = row_length(cfg.data.corpus, cfg.train.seq_len)
    impact(model, model.tokenizer.decode(splits.heldout), vdir / IMPACT_DIR, sweep_options(model.spec, rows, progress))
    return vdir / IMPACT_DIR / "impact.json"
