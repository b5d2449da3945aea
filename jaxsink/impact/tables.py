"""Markdown tables of one or more `impact.json` files (what docs/impact.md shows)."""
from __future__ import annotations

import json
import pathlib


def load(path) -> dict:
    return json.loads(pathlib.Path(path).read_text())


def _f(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def quant_table(r: dict) -> str:
    rows = ["| entry | perplexity | Δ | Δ sinks+spikes exact | recovered |", "|---|---|---|---|---|"]
    by = {(q["name"], q["keep"]): q for q in r["quant"]}
    for (name, keep), q in by.items():
        if keep != "none":
            continue
        kept = by.get((name, "sinks+spikes"), {})
        rec = r["recovery"].get(name)
        rows.append(f"| {name} | {_f(q['perplexity'])} | {_f(q['delta'])} | {_f(kept.get('delta'))} | "
                    f"{'–' if rec is None else f'{100 * rec:.0f}%'} |")
    share = r["quant"][1]["kept_share"] if len(r["quant"]) > 1 else None
    return "\n".join(rows) + f"\n\nfloat perplexity {_f(r['float_perplexity'])}; tokens kept exact: {_f(100 * share, 1) if share is not None else '–'}%"


def kv_table(r: dict) -> str:
    rows = ["| policy | budget | perplexity |", "|---|---|---|",
            f"| full cache | – | {_f(r['decode_float_perplexity'])} |"]
    rows += [f"| {e['policy']} | {e['budget']} | {_f(e['perplexity'])} |" for e in r["eviction"]]
    return "\n".join(rows)


def passkey_table(r: dict) -> str:
    """Retrieval accuracy and answer perplexity per cache policy (`--parts passkey`)."""
    rows = ["| policy | budget | retrieval accuracy | answer perplexity |", "|---|---|---|---|"]
    rows += [f"| {p['policy']} | {p['budget']} | {_f(100 * p['accuracy'], 0)}% | {_f(p['answer_perplexity'], 3)} |"
             for p in r.get("passkey", [])]
    return "\n".join(rows)


def layer_summary(r: dict) -> str:
    layers = r["layers"]
    if not layers:
        return ""
    worst = min(layers, key=lambda x: x["sqnr"].get("int8/tensor") or 1e9)
    top = max(layers, key=lambda x: x["kurtosis_bondarenko"] or 0)
    return (f"max Bondarenko kurtosis {_f(top['kurtosis_bondarenko'], 1)} at block {top['block']} {top['layer']} input; "
            f"lowest per-tensor int8 SQNR {_f(worst['sqnr'].get('int8/tensor'), 1)} dB at block {worst['block']} "
            f"{worst['layer']} input (per token {_f(worst['sqnr'].get('int8/token'), 1)} dB, with sinks+spikes exact "
            f"{_f(worst['sqnr_keep'].get('int8/tensor'), 1)} dB)")


def compare(results: dict[str, dict], entries=("W8A8/tensor", "W8A8/token", "W4A16", "A4/token", "KV4")) -> str:
    """One row per model: float perplexity, Δ per entry (nothing kept / sinks+spikes exact), KV budgets."""
    head = ["model", "float"] + [f"Δ {e}" for e in entries] + ["window / streaming / H2O (smallest budget)", "max kurtosis"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        by = {(q["name"], q["keep"]): q for q in r["quant"]}
        cells = [name, _f(r["float_perplexity"])]
        for e in entries:
            a, b = by.get((e, "none")), by.get((e, "sinks+spikes"))
            cells.append(f"{_f(a and a['delta'])} / {_f(b and b['delta'])}")
        small = min((x["budget"] for x in r["eviction"]), default=None)
        kv = {x["kind"]: x["perplexity"] for x in r["eviction"] if x["budget"] == small}
        cells.append(" / ".join(_f(kv.get(k)) for k in ("window", "streaming", "h2o")) + f" ({small})")
        cells.append(_f(max((x["kurtosis_bondarenko"] or 0 for x in r["layers"]), default=None), 1))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
