"""When does the BOS sink of Guo et al.'s Bigram-Backcopy task form, and how do its dynamics compare with
theirs? Reads the `bos/*` training statistics of bb_guo workdirs (`jaxsink.stats.bos_sink`).

    python -m jaxsink.bb_dynamics --out docs/reproduction/bb_guo_dynamics.png LABEL=WORKDIR [LABEL=WORKDIR ...]

prints, per run, the first logged step (and token count) at which non-trigger queries' attention on BOS
passes 0.5, and plots BOS attention, BOS value norm and BOS residual norm (after the first layer) against
the step beside Guo et al.'s published run (`docs/reproduction/guo2024_dynamics.json`, from their
`BBM/figures/BBM/dynamics.pkl`: 1 layer, batch 512, lr 3e-4).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from jaxsink.train.metrics import read_metrics

THRESHOLD = 0.5
PUBLISHED = pathlib.Path(__file__).resolve().parent.parent / "docs" / "reproduction" / "guo2024_dynamics.json"


def read_dynamics(workdir) -> dict:
    """{"steps", "bos_attention", "bos_value_norm", "bos_residual_norm", "tokens_per_step"} of a workdir:
    layer 1's values (the residual after its FFN block, Guo et al.'s layer output)."""
    workdir = pathlib.Path(workdir)
    cfg = json.loads((workdir / "config.json").read_text())
    rows = [r for r in read_metrics(workdir / "metrics.jsonl") if "bos/attention" in r]
    return {"steps": [r["step"] for r in rows], "bos_attention": [r["bos/attention"][0] for r in rows],
            "bos_value_norm": [r["bos/value_norm"][0] for r in rows],
            "bos_residual_norm": [r["bos/residual_norm"][1] for r in rows],
            "tokens_per_step": cfg["train"]["batch_size"] * cfg["train"]["seq_len"]}


def emergence(dyn: dict, threshold: float = THRESHOLD) -> dict:
    """First logged step whose BOS attention is >= threshold (None if never), its token count, and the
    last logged step (so "not by step N" can be stated)."""
    hit = next((s for s, a in zip(dyn["steps"], dyn["bos_attention"]) if a >= threshold), None)
    tps = dyn.get("tokens_per_step", 0)
    return {"step": hit, "tokens": None if hit is None else (hit + 1) * tps, "last_step": dyn["steps"][-1] if dyn["steps"] else None,
            "last_attention": dyn["bos_attention"][-1] if dyn["bos_attention"] else None}


def plot(runs: dict, out) -> str:
    """Three panels against the step (log x): ours (one line per run) and Guo et al.'s (black)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    guo = json.loads(PUBLISHED.read_text())
    panels = (("bos_attention", "attention of non-trigger queries on BOS"), ("bos_value_norm", "BOS value norm"),
              ("bos_residual_norm", "BOS residual norm (layer 1 output)"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, title) in zip(axes, panels):
        ax.plot([max(s, 1) for s in guo["steps"]], guo[key], "k-", lw=2, label="Guo et al. (b512, d256, T256)")
        for label, dyn in runs.items():
            ax.plot([max(s, 1) for s in dyn["steps"]], dyn[key], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_title(title)
        if key == "bos_attention":
            ax.axhline(THRESHOLD, color="grey", ls=":")
        if key == "bos_residual_norm":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return str(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxsink.bb_dynamics", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="LABEL=WORKDIR")
    p.add_argument("--out", required=True, help="PNG path")
    args = p.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, _, path = item.partition("=")
        if not path or not (pathlib.Path(path) / "metrics.jsonl").exists():
            p.error(f"{item!r}: give LABEL=WORKDIR of a trained bb_guo workdir")
        runs[label] = read_dynamics(path)
    print("| run | tokens / step | first step with BOS attention >= 0.5 | tokens | last step (BOS attention) |")
    print("|---|---|---|---|---|")
    for label, dyn in runs.items():
        e = emergence(dyn)
        step = e["step"] if e["step"] is not None else f"not by {e['last_step']}"
        tokens = f"{e['tokens'] / 1e6:.2f}M" if e["tokens"] else "-"
        print(f"| {label} | {dyn['tokens_per_step']} | {step} | {tokens} | {e['last_step']} ({e['last_attention']:.3f}) |")
    print(plot(runs, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
